// libFuzzer target for the parsers of untrusted files. The first input byte picks the parser:
// 0 pickle (checkpoint globals), 1 torch.save checkpoint (zip or legacy), 2 safetensors, 3 JSON,
// 4 pickle (benchmark .bin globals). Any idsynth::Error is an accepted outcome; a crash, a
// sanitizer report or a hang is a bug.  Build and run: scripts/fuzz.sh [seconds]
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include <c10/util/Exception.h>

#include "core/check.h"
#include "core/json.h"
#include "core/pickle.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t which = data[0] % 5;
  const uint8_t* p = data + 1;
  const size_t n = size - 1;
  try {
    switch (which) {
      case 0:
      case 4: {
        idsynth::pickle::Options o;
        if (which == 0)
          o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"};
        else
          o.allowed_globals = {"_codecs.encode"};
        o.max_stack = 1 << 16;
        o.max_memo = 1 << 16;
        idsynth::pickle::load(p, n, "fuzz", o);
        break;
      }
      case 1: idsynth::read_torch_checkpoint_bytes(p, n, "fuzz"); break;
      case 2: {
        static const std::string path = "/dev/shm/idsynth-fuzz-" + std::to_string(::getpid()) + ".safetensors";
        std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
        idsynth::SafeTensorsFile f(path);
        for (const auto& info : f.infos()) f.tensor(info.name).sum();
        break;
      }
      case 3: idsynth::json::parse(std::string(reinterpret_cast<const char*>(p), n), "fuzz"); break;
    }
  } catch (const idsynth::Error&) {
  } catch (const c10::Error&) {
    // libtorch's own checks (e.g. in the zip reader) are clean failures too.
  }
  return 0;
}
