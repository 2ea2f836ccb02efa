#include "formats/shard_file.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::formats {
namespace {

// The one lock around the HDF5 library in idsynth (every HDF5 call is in this file). The library
// here is thread-safe, but its lock is global anyway; one mutex keeps the error-stack handling
// below simple when several workers write and the training loader reads at once.
std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

// Closes an HDF5 handle with the matching H5?close at scope exit.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t), const std::string& what, const std::string& file) : id_(id), close_(close) {
    IDSYNTH_CHECK(id >= 0, file, ": HDF5: ", what, " failed");
  }
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void check_status(herr_t status, const std::string& file, const std::string& what) {
  IDSYNTH_CHECK(status >= 0, file, ": HDF5: ", what, " failed");
}

hid_t string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

void write_string_attr(hid_t loc, const char* name, const std::string& value, const std::string& file) {
  Handle type(string_type(), H5Tclose, "string type", file);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose, "scalar space", file);
  Handle attr(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, cat("attribute ", name), file);
  const char* p = value.c_str();
  check_status(H5Awrite(attr, type, &p), file, cat("writing attribute ", name));
}

void write_int_attr(hid_t loc, const char* name, int64_t value, const std::string& file) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose, "scalar space", file);
  Handle attr(H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, cat("attribute ", name),
              file);
  check_status(H5Awrite(attr, H5T_NATIVE_INT64, &value), file, cat("writing attribute ", name));
}

// A fixed-size dataset with a contiguous layout and no creation time (byte-deterministic).
template <typename T>
void write_array(hid_t file_id, hid_t dcpl, const char* name, hid_t file_type, hid_t mem_type, const std::vector<T>& v,
                 std::vector<hsize_t> dims, const std::string& file) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, "dataspace", file);
  Handle ds(H5Dcreate2(file_id, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose, cat("dataset ", name),
            file);
  if (!v.empty()) check_status(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), file, cat("writing ", name));
}

void write_bytes_array(hid_t file_id, hid_t dcpl, const char* name, const std::vector<std::string>& v, const std::string& file) {
  Handle type(H5Tvlen_create(H5T_STD_U8LE), H5Tclose, "vlen type", file);
  Handle mem_type(H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose, "vlen type", file);
  hsize_t n = v.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose, "dataspace", file);
  Handle ds(H5Dcreate2(file_id, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose, cat("dataset ", name), file);
  std::vector<hvl_t> data(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    data[i].len = v[i].size();
    data[i].p = const_cast<char*>(v[i].data());
  }
  if (!data.empty()) check_status(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), file, cat("writing ", name));
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  IDSYNTH_CHECK(fd >= 0, path, ": cannot open for fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  IDSYNTH_CHECK(rc == 0 || directory, path, ": fsync failed");
}

// The in-memory HDF5 file of write_shard is taken when the library frees it at close, after the
// close has written the final superblock (H5Fget_file_image before the close would give the image
// with its status flags cleared but the superblock checksum not recomputed). Set under hdf5_mutex.
struct ImageCapture {
  std::string* out = nullptr;
  size_t size = 0;  // the file's end of allocation (H5Fget_file_image's size)
};
ImageCapture g_capture;

void* image_malloc(size_t size, H5FD_file_image_op_t, void*) { return std::malloc(size); }
void* image_memcpy(void* dest, const void* src, size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dest, src, size);
}
void* image_realloc(void* ptr, size_t size, H5FD_file_image_op_t, void*) { return std::realloc(ptr, size); }
herr_t image_free(void* ptr, H5FD_file_image_op_t op, void*) {
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && g_capture.out != nullptr && ptr != nullptr)
    g_capture.out->assign(static_cast<const char*>(ptr), g_capture.size);
  std::free(ptr);
  return 0;
}

// ---- reading --------------------------------------------------------------------------------

bool has_link(hid_t file_id, const char* name) { return H5Lexists(file_id, name, H5P_DEFAULT) > 0; }

std::vector<hsize_t> dataset_dims(hid_t ds, const std::string& file, const char* name) {
  Handle space(H5Dget_space(ds), H5Sclose, cat("dataspace of ", name), file);
  const int rank = H5Sget_simple_extent_ndims(space);
  IDSYNTH_CHECK(rank >= 0, file, ": ", name, ": bad dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return dims;
}

template <typename T>
std::vector<T> read_array(hid_t file_id, const char* name, hid_t mem_type, const std::string& file,
                          std::vector<hsize_t>* dims_out = nullptr) {
  IDSYNTH_CHECK(has_link(file_id, name), file, ": dataset '", name, "' missing");
  Handle ds(H5Dopen2(file_id, name, H5P_DEFAULT), H5Dclose, cat("opening ", name), file);
  const auto dims = dataset_dims(ds, file, name);
  size_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<T> v(n);
  if (n > 0) check_status(H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), file, cat("reading ", name));
  if (dims_out != nullptr) *dims_out = dims;
  return v;
}

std::vector<std::string> read_bytes_array(hid_t file_id, const char* name, const std::string& file) {
  Handle ds(H5Dopen2(file_id, name, H5P_DEFAULT), H5Dclose, cat("opening ", name), file);
  const auto dims = dataset_dims(ds, file, name);
  IDSYNTH_CHECK(dims.size() == 1, file, ": ", name, ": expected rank 1, found ", dims.size());
  Handle mem_type(H5Tvlen_create(H5T_NATIVE_UINT8), H5Tclose, "vlen type", file);
  std::vector<hvl_t> data(dims[0]);
  std::vector<std::string> out(dims[0]);
  if (dims[0] == 0) return out;
  check_status(H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), file, cat("reading ", name));
  for (size_t i = 0; i < data.size(); ++i) out[i].assign(static_cast<const char*>(data[i].p), data[i].len);
  Handle space(H5Dget_space(ds), H5Sclose, "dataspace", file);
  H5Dvlen_reclaim(mem_type, space, H5P_DEFAULT, data.data());
  return out;
}

std::string read_string_attr(hid_t loc, const char* name, const std::string& file) {
  IDSYNTH_CHECK(H5Aexists(loc, name) > 0, file, ": attribute '", name, "' missing");
  Handle attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose, cat("attribute ", name), file);
  Handle type(string_type(), H5Tclose, "string type", file);
  char* p = nullptr;
  check_status(H5Aread(attr, type, &p), file, cat("reading attribute ", name));
  std::string s = p != nullptr ? p : "";
  H5free_memory(p);
  return s;
}

int64_t read_int_attr(hid_t loc, const char* name, const std::string& file) {
  IDSYNTH_CHECK(H5Aexists(loc, name) > 0, file, ": attribute '", name, "' missing");
  Handle attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose, cat("attribute ", name), file);
  int64_t v = 0;
  check_status(H5Aread(attr, H5T_NATIVE_INT64, &v), file, cat("reading attribute ", name));
  return v;
}

}  // namespace

void write_shard(const std::string& path, const ShardData& d) {
  const size_t n = d.size(), k = d.identity_index.size();
  IDSYNTH_CHECK(d.image_index.size() == n && d.attempt.size() == n && d.seed.size() == n && d.similarity.size() == n &&
                    (!d.has_images || d.images.size() == n) && (!d.has_aligned || d.aligned.size() == n) &&
                    d.identity_vectors.size() == k * static_cast<size_t>(d.dim),
                path, ": shard ", d.shard_index, ": inconsistent array lengths");
  // The file is built in memory (HDF5's core driver, no backing store) and written to disk by
  // write_file_atomic below. HDF5 never touches the disk, so a full disk or a file size limit is a
  // plain write error here (naming the path, the temporary removed) and never an HDF5 file that
  // fails to close, which the library then tries to close again at exit and crashes (SIGSEGV).
  // The bytes are those the sec2 driver writes.
  std::string image;
  {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    // A fixed format version (1.8 object headers) and no timestamps: the same data gives the same bytes.
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "file access list", path);
    check_status(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18), path, "libver bounds");
    check_status(H5Pset_fapl_core(fapl, 4 << 20, /*backing_store=*/false), path, "in-memory file driver");
    H5FD_file_image_callbacks_t callbacks = {image_malloc, image_memcpy, image_realloc, image_free, nullptr, nullptr, nullptr};
    check_status(H5Pset_file_image_callbacks(fapl, &callbacks), path, "file image callbacks");
    Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose, "file creation list", path);
    check_status(H5Pset_obj_track_times(fcpl, false), path, "track times (root group)");
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "dataset creation list", path);
    check_status(H5Pset_obj_track_times(dcpl, false), path, "track times");
    ssize_t size = 0;
    {
      Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl, fapl), H5Fclose, "creating the file in memory", path);

      write_string_attr(file, "format", "idsynth-shard", path);
      write_int_attr(file, "format_version", kShardFormatVersion, path);
      write_int_attr(file, "shard_index", d.shard_index, path);
      write_string_attr(file, "config", d.config, path);
      write_string_attr(file, "model_files", d.model_files, path);

      write_array(file, dcpl, "identity_index", H5T_STD_I64LE, H5T_NATIVE_INT64, d.identity_index, {k}, path);
      write_array(file, dcpl, "identity_vectors", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d.identity_vectors,
                  {k, static_cast<hsize_t>(d.dim)}, path);
      write_array(file, dcpl, "short_identities", H5T_STD_I64LE, H5T_NATIVE_INT64, d.short_identities,
                  {d.short_identities.size()}, path);
      write_array(file, dcpl, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, d.labels, {n}, path);
      write_array(file, dcpl, "image_index", H5T_STD_I32LE, H5T_NATIVE_INT32, d.image_index, {n}, path);
      write_array(file, dcpl, "attempt", H5T_STD_I32LE, H5T_NATIVE_INT32, d.attempt, {n}, path);
      write_array(file, dcpl, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, d.seed, {n}, path);
      write_array(file, dcpl, "similarity", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d.similarity, {n}, path);
      if (d.has_images) write_bytes_array(file, dcpl, "images", d.images, path);
      if (d.has_aligned) write_bytes_array(file, dcpl, "aligned", d.aligned, path);
      check_status(H5Fflush(file, H5F_SCOPE_GLOBAL), path, "flush");
      size = H5Fget_file_image(file, nullptr, 0);
      IDSYNTH_CHECK(size > 0, path, ": HDF5: size of the file image: expected > 0, found ", size);
      g_capture = {&image, static_cast<size_t>(size)};
    }  // H5Fclose: the final superblock, then image_free hands over the bytes
    g_capture = {};
    IDSYNTH_CHECK(image.size() == static_cast<size_t>(size), path, ": HDF5: closing the in-memory file failed");
    // Superblock version 2 (H5F_LIBVER_V18), 8-byte addresses: the end-of-file address at byte 28
    // is the file's length, as the sec2 driver truncates it at close.
    IDSYNTH_CHECK(image.size() >= 48 && image[8] == 2 && image[9] == 8, path, ": HDF5: expected a version 2 superblock");
    uint64_t eof = 0;
    for (int i = 7; i >= 0; --i) eof = (eof << 8) | static_cast<uint8_t>(image[28 + i]);
    IDSYNTH_CHECK(eof <= image.size(), path, ": HDF5: end of file ", eof, " beyond the image's ", image.size(), " bytes");
    image.resize(eof);
  }
  write_file_atomic(path, image);
  const std::string parent = std::filesystem::path(path).parent_path().string();
  fsync_path(parent.empty() ? "." : parent, true);
}

namespace {

uint64_t load_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The walk of H5HG__cache_heap_deserialize over one collection of `size` bytes at `heap`, with
// lengths of `length_bytes` (the superblock's size of lengths: 8 in every file idsynth writes, 4
// or 2 possible). Returns what libhdf5 would do wrong with it, or nothing.
struct BadHeapObject {
  uint64_t offset = 0;  // of the object within the collection
  const char* problem = nullptr;
};
std::optional<BadHeapObject> bad_heap_object(const unsigned char* heap, uint64_t size, int length_bytes) {
  const uint64_t header = 8 + static_cast<uint64_t>(length_bytes);         // "GCOL", version, 3 reserved, size
  const uint64_t object_header = 8 + static_cast<uint64_t>(length_bytes);  // index, refcount, 4 reserved, size
  uint64_t p = header;
  while (p < size) {
    if (p + object_header > size) break;  // the tail is too small for an object: free space
    const uint64_t index = load_le(heap + p, 2);
    const uint64_t object_size = load_le(heap + p + 8, length_bytes);
    // unsigned arithmetic wraps as the library's size_t does
    const uint64_t need = index > 0 ? object_header + ((object_size + 7) & ~uint64_t{7}) : object_size;
    const uint64_t next = p + need;
    if (need == 0 || next <= p) return BadHeapObject{p, "whose size would stop libhdf5 from advancing (it would hang reading it)"};
    // H5HG_read copies an object's bytes without checking that they lie inside the collection.
    if (index > 0 && object_size > size - p - object_header)  // p + object_header <= size here
      return BadHeapObject{p, "whose size runs past the end of the collection (libhdf5 would read beyond its buffer)"};
    p = next;
  }
  return std::nullopt;
}

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    IDSYNTH_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      size_ = static_cast<size_t>(st.st_size);
      void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (m != MAP_FAILED) data_ = static_cast<const unsigned char*>(m);
    }
    ::close(fd);
    IDSYNTH_CHECK(size_ == 0 || data_ != nullptr, path, ": cannot map the file to check it: ", std::strerror(errno));
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

void check_hdf5_global_heaps(const std::string& path) {
  const MappedFile file(path);
  const unsigned char* const begin = file.data();
  const size_t n = file.size();
  // The superblock (at 0, or after a user block at 512, 1024, 2048, ...) gives the size of lengths.
  static constexpr unsigned char kSignature[] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  int length_bytes = 0;
  for (size_t base = 0; base + 16 <= n; base = base == 0 ? 512 : base * 2) {
    if (std::memcmp(begin + base, kSignature, sizeof kSignature) != 0) continue;
    const unsigned version = begin[base + 8];
    length_bytes = version <= 1 ? begin[base + 14] : begin[base + 10];
    break;
  }
  // No superblock, or lengths libhdf5 does not decode: it refuses the file before any heap is read.
  if (length_bytes != 2 && length_bytes != 4 && length_bytes != 8) return;
  static constexpr char kMagic[] = {'G', 'C', 'O', 'L', 1};
  for (size_t at = 0; at + sizeof kMagic <= n;) {
    const void* hit = memmem(begin + at, n - at, kMagic, sizeof kMagic);
    if (hit == nullptr) break;
    const size_t offset = static_cast<size_t>(static_cast<const unsigned char*>(hit) - begin);
    if (offset + 8 + static_cast<size_t>(length_bytes) <= n) {
      const uint64_t size = load_le(begin + offset + 8, length_bytes);
      // A collection that does not fit in the file is refused by libhdf5 before it is walked.
      if (size <= n - offset) {
        const std::optional<BadHeapObject> bad = bad_heap_object(begin + offset, size, length_bytes);
        IDSYNTH_CHECK(!bad, path, ": damaged HDF5 file: the global heap collection at byte ", offset, " has an object at byte ",
                      offset + (bad ? bad->offset : 0), " ", bad ? bad->problem : "", "; regenerate the file");
      }
    }
    at = offset + 1;
  }
}

ShardData read_shard(const std::string& path) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  IDSYNTH_CHECK(H5Fis_hdf5(path.c_str()) > 0, path, ": not an HDF5 file (missing, truncated or damaged)");
  check_hdf5_global_heaps(path);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening the file", path);
  ShardData d;
  const std::string format = read_string_attr(file, "format", path);
  IDSYNTH_CHECK(format == "idsynth-shard", path, ": attribute format: expected 'idsynth-shard', found '", format, "'");
  const int64_t version = read_int_attr(file, "format_version", path);
  IDSYNTH_CHECK(version == kShardFormatVersion, path, ": attribute format_version: expected ", kShardFormatVersion,
                ", found ", version);
  d.shard_index = read_int_attr(file, "shard_index", path);
  d.config = read_string_attr(file, "config", path);
  d.model_files = read_string_attr(file, "model_files", path);
  d.identity_index = read_array<int64_t>(file, "identity_index", H5T_NATIVE_INT64, path);
  std::vector<hsize_t> dims;
  d.identity_vectors = read_array<float>(file, "identity_vectors", H5T_NATIVE_FLOAT, path, &dims);
  IDSYNTH_CHECK(dims.size() == 2 && dims[0] == d.identity_index.size(), path,
                ": identity_vectors: expected [K, D] with K = len(identity_index)");
  d.dim = static_cast<int64_t>(dims[1]);
  d.short_identities = read_array<int64_t>(file, "short_identities", H5T_NATIVE_INT64, path);
  d.labels = read_array<int64_t>(file, "labels", H5T_NATIVE_INT64, path);
  d.image_index = read_array<int32_t>(file, "image_index", H5T_NATIVE_INT32, path);
  d.attempt = read_array<int32_t>(file, "attempt", H5T_NATIVE_INT32, path);
  d.seed = read_array<uint64_t>(file, "seed", H5T_NATIVE_UINT64, path);
  d.similarity = read_array<float>(file, "similarity", H5T_NATIVE_FLOAT, path);
  d.has_images = has_link(file, "images");
  d.has_aligned = has_link(file, "aligned");
  if (d.has_images) d.images = read_bytes_array(file, "images", path);
  if (d.has_aligned) d.aligned = read_bytes_array(file, "aligned", path);
  const size_t n = d.labels.size();
  IDSYNTH_CHECK(d.image_index.size() == n && d.attempt.size() == n && d.seed.size() == n && d.similarity.size() == n &&
                    (!d.has_images || d.images.size() == n) && (!d.has_aligned || d.aligned.size() == n),
                path, ": per-image datasets: expected ", n, " entries each (the length of labels)");
  return d;
}

ShardImageReader::ShardImageReader(const std::string& path, const std::string& image) : path_(path) {
  static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t");
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  // A malformed shard throws half-way: what was opened is closed here, as the destructor of an
  // object never constructed will not run (libhdf5 would otherwise keep the file open).
  try {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported here, not printed by HDF5
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    IDSYNTH_CHECK(file_ >= 0, path, ": expected an HDF5 shard, could not open it");
    check_hdf5_global_heaps(path);
    const bool has_aligned = has_link(file_, "aligned");
    const bool has_images = has_link(file_, "images");
    std::string name = image;
    if (name == "auto") name = has_aligned ? "aligned" : "images";
    IDSYNTH_CHECK(name == "aligned" ? has_aligned : has_images, path, ": dataset '", name,
                  "': expected variable-length JPEG bytes, not in the shard (data.image: ", image, ")");
    IDSYNTH_CHECK(has_link(file_, "labels"), path, ": dataset 'labels': expected int64 [N], not found");
    {
      Handle labels(H5Dopen2(file_, "labels", H5P_DEFAULT), H5Dclose, "opening labels", path);
      const int64_t n = extent(labels, "labels");
      labels_.resize(static_cast<size_t>(n));
      if (n > 0)
        IDSYNTH_CHECK(H5Dread(labels, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels_.data()) >= 0, path,
                      ": dataset 'labels': expected integers, could not read them");
    }
    images_ = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
    IDSYNTH_CHECK(images_ >= 0, path, ": dataset '", name, "': could not open it");
    const int64_t m = extent(images_, name.c_str());
    IDSYNTH_CHECK(m == static_cast<int64_t>(labels_.size()), path, ": dataset '", name, "': expected ", labels_.size(),
                  " images (one per label), found ", m);
    const hid_t ftype = H5Dget_type(images_);
    const bool vlen = H5Tget_class(ftype) == H5T_VLEN;
    H5Tclose(ftype);
    IDSYNTH_CHECK(vlen, path, ": dataset '", name, "': expected variable-length uint8 (JPEG bytes), found another type");
    memtype_ = H5Tvlen_create(H5T_NATIVE_UCHAR);
    image_name_ = name;
  } catch (...) {
    if (memtype_ >= 0) H5Tclose(memtype_);
    if (images_ >= 0) H5Dclose(images_);
    if (file_ >= 0) H5Fclose(file_);
    memtype_ = images_ = file_ = -1;
    throw;
  }
}

ShardImageReader::~ShardImageReader() {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (memtype_ >= 0) H5Tclose(memtype_);
  if (images_ >= 0) H5Dclose(images_);
  if (file_ >= 0) H5Fclose(file_);
}

int64_t ShardImageReader::extent(int64_t dataset, const char* name) const {
  const hid_t space = H5Dget_space(dataset);
  const int rank = H5Sget_simple_extent_ndims(space);
  hsize_t dims[2] = {0, 0};
  if (rank == 1) H5Sget_simple_extent_dims(space, dims, nullptr);
  H5Sclose(space);
  IDSYNTH_CHECK(rank == 1, path_, ": dataset '", name, "': expected 1 dimension, found ", rank);
  return static_cast<int64_t>(dims[0]);
}

std::string ShardImageReader::read(int64_t i) const {
  IDSYNTH_CHECK(i >= 0 && i < static_cast<int64_t>(labels_.size()), path_, ": dataset '", image_name_, "'[", i,
                "]: expected an index below ", labels_.size());
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  const hid_t fspace = H5Dget_space(images_);
  const hsize_t start = static_cast<hsize_t>(i), count = 1;
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
  const hid_t mspace = H5Screate_simple(1, &count, nullptr);
  hvl_t vl{0, nullptr};
  const herr_t rc = H5Dread(images_, memtype_, mspace, fspace, H5P_DEFAULT, &vl);
  std::string bytes;
  if (rc >= 0 && vl.p != nullptr) bytes.assign(static_cast<const char*>(vl.p), vl.len);
  if (rc >= 0) H5Dvlen_reclaim(memtype_, mspace, H5P_DEFAULT, &vl);
  H5Sclose(mspace);
  H5Sclose(fspace);
  IDSYNTH_CHECK(rc >= 0, path_, ": dataset '", image_name_, "'[", i, "]: could not read the image bytes");
  return bytes;
}

}  // namespace idsynth::formats
