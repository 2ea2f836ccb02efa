#include "core/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/check.h"

namespace idsynth {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IDSYNTH_CHECK(in.good(), path, ": cannot open for reading (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  IDSYNTH_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot stat (", std::strerror(errno), ")");
  return static_cast<uint64_t>(st.st_size);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  // Every failure (a read-only folder, a full disk, a file size limit: EROFS, ENOSPC, EDQUOT,
  // EFBIG) names the final path and removes the temporary: a partial file never stays behind and
  // the previous file under `path`, if any, is untouched.
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    fail(path, ": cannot create the temporary file ", tmp, " (", std::strerror(err), ")");
  }
  auto give_up = [&](int err, const char* what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, ": ", what, " failed (", std::strerror(err), "); nothing written, the temporary file was removed");
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) give_up(errno, "write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) give_up(errno, "fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": close failed (", std::strerror(err), "); nothing written, the temporary file was removed");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " over it (", std::strerror(err), "); the temporary file was removed");
  }
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  IDSYNTH_CHECK(fd >= 0, path, ": cannot open for reading (", std::strerror(errno), ")");
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    // Copy-on-write: tensors that alias the map may be modified without touching the file.
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail(path, ": mmap failed (", std::strerror(err), ")");
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace idsynth
