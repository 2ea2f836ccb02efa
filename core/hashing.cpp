#include "core/hashing.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth {
namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    IDSYNTH_CHECK(ctx_ && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1, "sha256: OpenSSL init failed");
  }
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &len);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < len; ++i) {
      s += digits[md[i] >> 4];
      s += digits[md[i] & 15];
    }
    return s;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  MappedFile map(path);
  Sha256 h;
  // Chunked so the kernel can drop pages behind us on multi-GB checkpoints.
  const size_t chunk = size_t{64} << 20;
  for (size_t off = 0; off < map.size(); off += chunk) h.update(map.data() + off, std::min(chunk, map.size() - off));
  return h.hex();
}

}  // namespace idsynth
