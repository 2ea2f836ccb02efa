// SHA-256 of files and byte strings (OpenSSL), for manifests and for recording which model files
// produced an output.
#pragma once

#include <string>

namespace idsynth {

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);

}  // namespace idsynth
