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

// The version-1 reader's type for its variable-length string attributes.
hid_t string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// A fixed-length string attribute: its bytes live in the object header, never in a global heap.
void write_fixed_string_attr(hid_t loc, const char* name, const std::string& value, const std::string& file) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose, "string type", file);
  check_status(H5Tset_size(type, value.size()), file, cat("string type of ", name));
  check_status(H5Tset_strpad(type, H5T_STR_NULLPAD), file, cat("string type of ", name));
  Handle space(H5Screate(H5S_SCALAR), H5Sclose, "scalar space", file);
  Handle attr(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, cat("attribute ", name), file);
  check_status(H5Awrite(attr, type, value.data()), file, cat("writing attribute ", name));
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

void write_text(hid_t file_id, hid_t dcpl, const char* name, const std::string& text, const std::string& file) {
  const std::vector<uint8_t> bytes(text.begin(), text.end());
  write_array(file_id, dcpl, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, bytes, {bytes.size()}, file);
}

// Version 2 stores N byte strings as their concatenation (uint8 [total]) and N + 1 offsets
// (int64), so that reading them never asks libhdf5 for variable-length data (docs/reliability.md,
// finding 9).
void write_concatenated(hid_t file_id, hid_t dcpl, const std::string& name, const std::vector<std::string>& v,
                        const std::string& file) {
  std::vector<int64_t> offsets(v.size() + 1, 0);
  for (size_t i = 0; i < v.size(); ++i) offsets[i + 1] = offsets[i] + static_cast<int64_t>(v[i].size());
  std::vector<uint8_t> bytes;
  bytes.reserve(static_cast<size_t>(offsets.back()));
  for (const auto& b : v) bytes.insert(bytes.end(), b.begin(), b.end());
  write_array(file_id, dcpl, name.c_str(), H5T_STD_U8LE, H5T_NATIVE_UINT8, bytes, {bytes.size()}, file);
  write_array(file_id, dcpl, (name + "_offsets").c_str(), H5T_STD_I64LE, H5T_NATIVE_INT64, offsets, {offsets.size()}, file);
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
// A shard may come from anywhere, so every object is checked against what write_shard makes before
// libhdf5 reads its data: hard links only (an external link or a virtual dataset would make the
// reader open other files), contiguous or compact storage inside this file (no external files, no
// filters), the expected element class, and no more elements than the file has bytes (a hostile
// header cannot make the reader allocate memory the file does not back).

bool has_link(hid_t file_id, const char* name) { return H5Lexists(file_id, name, H5P_DEFAULT) > 0; }

hid_t open_dataset(hid_t file_id, const char* name, const std::string& file) {
  IDSYNTH_CHECK(has_link(file_id, name), file, ": dataset '", name, "' missing");
  H5L_info_t link{};
  check_status(H5Lget_info(file_id, name, &link, H5P_DEFAULT), file, cat("link ", name));
  IDSYNTH_CHECK(link.type == H5L_TYPE_HARD, file, ": '", name, "': expected a dataset in this file, found a ",
                link.type == H5L_TYPE_EXTERNAL ? "link to another file" : "soft or user-defined link");
  const hid_t ds = H5Dopen2(file_id, name, H5P_DEFAULT);
  IDSYNTH_CHECK(ds >= 0, file, ": dataset '", name, "': could not open it");
  return ds;
}

const char* class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_VLEN: return "variable-length";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    default: return "another type";
  }
}

// The extent of dataset `ds`, after the checks above. `element` is the class the reader converts
// from; `rank` the expected rank (0: any).
std::vector<hsize_t> checked_extent(hid_t ds, const char* name, H5T_class_t element, int rank, uint64_t file_size,
                                    const std::string& file) {
  {
    Handle type(H5Dget_type(ds), H5Tclose, cat("type of ", name), file);
    const H5T_class_t c = H5Tget_class(type);
    IDSYNTH_CHECK(c == element, file, ": dataset '", name, "': expected ", class_name(element), " elements, found ",
                  class_name(c));
    IDSYNTH_CHECK(element == H5T_VLEN || H5Tget_size(type) <= 8, file, ": dataset '", name,
                  "': expected elements of at most 8 bytes, found ", H5Tget_size(type));
    Handle dcpl(H5Dget_create_plist(ds), H5Pclose, cat("creation list of ", name), file);
    const H5D_layout_t layout = H5Pget_layout(dcpl);
    IDSYNTH_CHECK(layout == H5D_CONTIGUOUS || layout == H5D_COMPACT, file, ": dataset '", name,
                  "': expected contiguous storage (as idsynth writes), found ",
                  layout == H5D_CHUNKED ? "chunked" : layout == H5D_VIRTUAL ? "virtual" : "another", " storage");
    IDSYNTH_CHECK(H5Pget_external_count(dcpl) == 0, file, ": dataset '", name,
                  "': expected its data inside the file, found external files");
  }
  Handle space(H5Dget_space(ds), H5Sclose, cat("dataspace of ", name), file);
  const int r = H5Sget_simple_extent_ndims(space);
  IDSYNTH_CHECK(r >= 0 && r <= 4, file, ": dataset '", name, "': bad dataspace");
  IDSYNTH_CHECK(rank == 0 || r == rank, file, ": dataset '", name, "': expected ", rank, " dimension(s), found ", r);
  std::vector<hsize_t> dims(static_cast<size_t>(r));
  if (r > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  uint64_t count = 1;
  for (hsize_t d : dims) {
    IDSYNTH_CHECK(d <= file_size && (d == 0 || count <= file_size / d), file, ": dataset '", name,
                  "': expected at most ", file_size, " elements (the file's size), found a larger extent");
    count *= d;
  }
  IDSYNTH_CHECK(count <= file_size, file, ": dataset '", name, "': expected at most ", file_size,
                " elements (the file's size), found ", count);
  return dims;
}

template <typename T>
std::vector<T> read_array(hid_t file_id, const char* name, hid_t mem_type, uint64_t file_size, const std::string& file,
                          std::vector<hsize_t>* dims_out = nullptr) {
  Handle ds(open_dataset(file_id, name, file), H5Dclose, cat("opening ", name), file);
  const H5T_class_t element = H5Tget_class(mem_type);
  const auto dims = checked_extent(ds, name, element, 0, file_size, file);
  size_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<T> v(n);
  if (n > 0) check_status(H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), file, cat("reading ", name));
  if (dims_out != nullptr) *dims_out = dims;
  return v;
}

// Version 1's images: one variable-length uint8 element each (trusted files only, finding 9).
std::vector<std::string> read_vlen_bytes(hid_t file_id, const char* name, uint64_t file_size, const std::string& file) {
  Handle ds(open_dataset(file_id, name, file), H5Dclose, cat("opening ", name), file);
  const auto dims = checked_extent(ds, name, H5T_VLEN, 1, file_size, file);
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

// Version 2's offsets of `name` into its concatenated bytes (of `total` bytes): N + 1 of them, from
// 0 to total, never decreasing.
std::vector<int64_t> read_offsets(hid_t file_id, const std::string& name, uint64_t total, uint64_t file_size,
                                  const std::string& file) {
  const std::string offsets_name = name + "_offsets";
  std::vector<int64_t> offsets = read_array<int64_t>(file_id, offsets_name.c_str(), H5T_NATIVE_INT64, file_size, file);
  IDSYNTH_CHECK(!offsets.empty() && offsets.front() == 0, file, ": dataset '", offsets_name,
                "': expected N + 1 offsets starting at 0");
  for (size_t i = 1; i < offsets.size(); ++i)
    IDSYNTH_CHECK(offsets[i] >= offsets[i - 1], file, ": dataset '", offsets_name, "'[", i,
                  "]: expected offsets that never decrease, found ", offsets[i], " after ", offsets[i - 1]);
  IDSYNTH_CHECK(static_cast<uint64_t>(offsets.back()) == total, file, ": dataset '", offsets_name,
                "': expected the last offset to be the length of '", name, "' (", total, "), found ", offsets.back());
  return offsets;
}

std::vector<std::string> read_concatenated(hid_t file_id, const char* name, uint64_t file_size, const std::string& file) {
  const std::vector<uint8_t> bytes = read_array<uint8_t>(file_id, name, H5T_NATIVE_UINT8, file_size, file);
  const std::vector<int64_t> offsets = read_offsets(file_id, name, bytes.size(), file_size, file);
  std::vector<std::string> out(offsets.size() - 1);
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    out[i].assign(reinterpret_cast<const char*>(bytes.data()) + offsets[i], static_cast<size_t>(offsets[i + 1] - offsets[i]));
  return out;
}

std::string read_text(hid_t file_id, const char* name, uint64_t file_size, const std::string& file) {
  const std::vector<uint8_t> bytes = read_array<uint8_t>(file_id, name, H5T_NATIVE_UINT8, file_size, file);
  return std::string(bytes.begin(), bytes.end());
}

hid_t open_attr(hid_t loc, const char* name, H5T_class_t element, const std::string& file) {
  IDSYNTH_CHECK(H5Aexists(loc, name) > 0, file, ": attribute '", name, "' missing");
  const hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
  IDSYNTH_CHECK(attr >= 0, file, ": attribute '", name, "': could not open it");
  const hid_t type = H5Aget_type(attr);
  const H5T_class_t c = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
  if (type >= 0) H5Tclose(type);
  if (c != element) H5Aclose(attr);
  IDSYNTH_CHECK(c == element, file, ": attribute '", name, "': expected ", class_name(element), ", found ", class_name(c));
  return attr;
}

// Version 1's variable-length string attributes (trusted files only, finding 9).
std::string read_vlen_string_attr(hid_t loc, const char* name, const std::string& file) {
  Handle attr(open_attr(loc, name, H5T_STRING, file), H5Aclose, cat("attribute ", name), file);
  Handle type(string_type(), H5Tclose, "string type", file);
  char* p = nullptr;
  check_status(H5Aread(attr, type, &p), file, cat("reading attribute ", name));
  std::string s = p != nullptr ? p : "";
  H5free_memory(p);
  return s;
}

// Version 2's fixed-length string attribute (`format`), up to 256 bytes, trailing NULs dropped.
std::string read_fixed_string_attr(hid_t loc, const char* name, const std::string& file) {
  Handle attr(open_attr(loc, name, H5T_STRING, file), H5Aclose, cat("attribute ", name), file);
  Handle type(H5Aget_type(attr), H5Tclose, cat("type of ", name), file);
  IDSYNTH_CHECK(H5Tis_variable_str(type) == 0, file, ": attribute '", name,
                "': expected a fixed-length string, found a variable-length one");
  Handle space(H5Aget_space(attr), H5Sclose, cat("dataspace of ", name), file);
  IDSYNTH_CHECK(H5Sget_simple_extent_npoints(space) == 1, file, ": attribute '", name, "': expected one string");
  const size_t size = H5Tget_size(type);
  IDSYNTH_CHECK(size >= 1 && size <= 256, file, ": attribute '", name, "': expected at most 256 bytes, found ", size);
  std::string s(size, '\0');
  check_status(H5Aread(attr, type, s.data()), file, cat("reading attribute ", name));
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

int64_t read_int_attr(hid_t loc, const char* name, const std::string& file) {
  Handle attr(open_attr(loc, name, H5T_INTEGER, file), H5Aclose, cat("attribute ", name), file);
  Handle space(H5Aget_space(attr), H5Sclose, cat("dataspace of ", name), file);
  IDSYNTH_CHECK(H5Sget_simple_extent_npoints(space) == 1, file, ": attribute '", name, "': expected one integer");
  int64_t v = 0;
  check_status(H5Aread(attr, H5T_NATIVE_INT64, &v), file, cat("reading attribute ", name));
  return v;
}

// format_version, checked to be one this reader knows (and, for version 1, that it may read it).
int64_t read_format_version(hid_t file_id, bool accept_version_1, const std::string& file) {
  const int64_t version = read_int_attr(file_id, "format_version", file);
  IDSYNTH_CHECK(version == kShardFormatVersion || version == 1, file, ": attribute format_version: expected 1 or ",
                kShardFormatVersion, ", found ", version);
  IDSYNTH_CHECK(version != 1 || accept_version_1, file,
                ": attribute format_version: expected ", kShardFormatVersion,
                " (version-1 shards keep variable-length data, which is read only from trusted sources), found 1");
  if (version == 1) check_hdf5_global_heaps(file);
  const std::string format = version == 1 ? read_vlen_string_attr(file_id, "format", file)
                                          : read_fixed_string_attr(file_id, "format", file);
  IDSYNTH_CHECK(format == "idsynth-shard", file, ": attribute format: expected 'idsynth-shard', found '", format, "'");
  return version;
}

uint64_t size_of_file(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  IDSYNTH_CHECK(!ec, path, ": cannot read its size: ", ec.message());
  return size;
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

      write_fixed_string_attr(file, "format", "idsynth-shard", path);
      write_int_attr(file, "format_version", kShardFormatVersion, path);
      write_int_attr(file, "shard_index", d.shard_index, path);
      write_text(file, dcpl, "config", d.config, path);
      write_text(file, dcpl, "model_files", d.model_files, path);

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
      if (d.has_images) write_concatenated(file, dcpl, "images", d.images, path);
      if (d.has_aligned) write_concatenated(file, dcpl, "aligned", d.aligned, path);
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

ShardData read_shard(const std::string& path, bool accept_version_1) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  IDSYNTH_CHECK(H5Fis_hdf5(path.c_str()) > 0, path, ": not an HDF5 file (missing, truncated or damaged)");
  const uint64_t file_size = size_of_file(path);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening the file", path);
  const int64_t version = read_format_version(file, accept_version_1, path);
  ShardData d;
  d.shard_index = read_int_attr(file, "shard_index", path);
  if (version == 1) {
    d.config = read_vlen_string_attr(file, "config", path);
    d.model_files = read_vlen_string_attr(file, "model_files", path);
  } else {
    d.config = read_text(file, "config", file_size, path);
    d.model_files = read_text(file, "model_files", file_size, path);
  }
  d.identity_index = read_array<int64_t>(file, "identity_index", H5T_NATIVE_INT64, file_size, path);
  std::vector<hsize_t> dims;
  d.identity_vectors = read_array<float>(file, "identity_vectors", H5T_NATIVE_FLOAT, file_size, path, &dims);
  IDSYNTH_CHECK(dims.size() == 2 && dims[0] == d.identity_index.size(), path,
                ": identity_vectors: expected [K, D] with K = len(identity_index)");
  d.dim = static_cast<int64_t>(dims[1]);
  d.short_identities = read_array<int64_t>(file, "short_identities", H5T_NATIVE_INT64, file_size, path);
  d.labels = read_array<int64_t>(file, "labels", H5T_NATIVE_INT64, file_size, path);
  d.image_index = read_array<int32_t>(file, "image_index", H5T_NATIVE_INT32, file_size, path);
  d.attempt = read_array<int32_t>(file, "attempt", H5T_NATIVE_INT32, file_size, path);
  d.seed = read_array<uint64_t>(file, "seed", H5T_NATIVE_UINT64, file_size, path);
  d.similarity = read_array<float>(file, "similarity", H5T_NATIVE_FLOAT, file_size, path);
  d.has_images = has_link(file, "images");
  d.has_aligned = has_link(file, "aligned");
  const auto read_images = [&](const char* name) {
    return version == 1 ? read_vlen_bytes(file, name, file_size, path) : read_concatenated(file, name, file_size, path);
  };
  if (d.has_images) d.images = read_images("images");
  if (d.has_aligned) d.aligned = read_images("aligned");
  const size_t n = d.labels.size();
  IDSYNTH_CHECK(d.image_index.size() == n && d.attempt.size() == n && d.seed.size() == n && d.similarity.size() == n &&
                    (!d.has_images || d.images.size() == n) && (!d.has_aligned || d.aligned.size() == n),
                path, ": per-image datasets: expected ", n, " entries each (the length of labels)");
  return d;
}

ShardImageReader::ShardImageReader(const std::string& path, const std::string& image, bool accept_version_1)
    : path_(path) {
  static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t");
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  // A malformed shard throws half-way: what was opened is closed here, as the destructor of an
  // object never constructed will not run (libhdf5 would otherwise keep the file open).
  try {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported here, not printed by HDF5
    const uint64_t file_size = size_of_file(path);
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    IDSYNTH_CHECK(file_ >= 0, path, ": expected an HDF5 shard, could not open it");
    version_ = read_format_version(file_, accept_version_1, path);
    const bool has_aligned = has_link(file_, "aligned");
    const bool has_images = has_link(file_, "images");
    std::string name = image;
    if (name == "auto") name = has_aligned ? "aligned" : "images";
    IDSYNTH_CHECK(name == "aligned" ? has_aligned : has_images, path, ": dataset '", name,
                  "': expected JPEG bytes, not in the shard (data.image: ", image, ")");
    labels_ = read_array<int64_t>(file_, "labels", H5T_NATIVE_INT64, file_size, path);
    images_ = open_dataset(file_, name.c_str(), path);
    if (version_ == 1) {
      const int64_t m = static_cast<int64_t>(checked_extent(images_, name.c_str(), H5T_VLEN, 1, file_size, path)[0]);
      IDSYNTH_CHECK(m == static_cast<int64_t>(labels_.size()), path, ": dataset '", name, "': expected ",
                    labels_.size(), " images (one per label), found ", m);
      memtype_ = H5Tvlen_create(H5T_NATIVE_UCHAR);
    } else {
      const uint64_t total = checked_extent(images_, name.c_str(), H5T_INTEGER, 1, file_size, path)[0];
      offsets_ = read_offsets(file_, name, total, file_size, path);
      IDSYNTH_CHECK(offsets_.size() == labels_.size() + 1, path, ": dataset '", name, "_offsets': expected ",
                    labels_.size() + 1, " offsets (one image per label), found ", offsets_.size());
    }
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

std::string ShardImageReader::read(int64_t i) const {
  IDSYNTH_CHECK(i >= 0 && i < static_cast<int64_t>(labels_.size()), path_, ": dataset '", image_name_, "'[", i,
                "]: expected an index below ", labels_.size());
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  const hid_t fspace = H5Dget_space(images_);
  std::string bytes;
  herr_t rc = 0;
  if (version_ == 1) {
    const hsize_t start = static_cast<hsize_t>(i), count = 1;
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
    const hid_t mspace = H5Screate_simple(1, &count, nullptr);
    hvl_t vl{0, nullptr};
    rc = H5Dread(images_, memtype_, mspace, fspace, H5P_DEFAULT, &vl);
    if (rc >= 0 && vl.p != nullptr) bytes.assign(static_cast<const char*>(vl.p), vl.len);
    if (rc >= 0) H5Dvlen_reclaim(memtype_, mspace, H5P_DEFAULT, &vl);
    H5Sclose(mspace);
  } else {
    const hsize_t start = static_cast<hsize_t>(offsets_[i]), count = static_cast<hsize_t>(offsets_[i + 1] - offsets_[i]);
    bytes.resize(count);
    if (count > 0) {
      H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
      const hid_t mspace = H5Screate_simple(1, &count, nullptr);
      rc = H5Dread(images_, H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT, bytes.data());
      H5Sclose(mspace);
    }
  }
  H5Sclose(fspace);
  IDSYNTH_CHECK(rc >= 0, path_, ": dataset '", image_name_, "'[", i, "]: could not read the image bytes");
  return bytes;
}

}  // namespace idsynth::formats
