// Files: whole-file reads with clear errors, atomic writes (temporary name, flush, fsync, rename) so a
// crash never leaves a half-written output under its final name, and read-only memory maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace idsynth {

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);

// Writes bytes to path + ".tmp.<pid>", fsyncs, then renames over path.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Read-only memory map of a whole file; the mapping lives as long as the object.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace idsynth
