// Safe reading of `torch.save` files without Python and without executing pickle code:
//  - the zip format (PyTorch >= 1.6): `<archive>/data.pkl` + `<archive>/data/<key>` storage records,
//    e.g. the Arc2Face encoder's `pytorch_model.bin` or pytorch-fid's `pt_inception-*.pth`;
//  - the legacy format (PyTorch < 1.6): magic, protocol, sys-info and object pickles followed by
//    the raw storages, e.g. the LPIPS `alex.pth` / `vgg.pth` linear layers.
// Only state-dict content is understood: (ordered) dicts, tensors rebuilt from storages, plain
// Python scalars and strings. Nested dicts are flattened with '.' ({"state_dict": {"fc.weight": t}}
// gives "state_dict.fc.weight"); other values are skipped. Tensors saved on CUDA load on the CPU.
// Ref: torch/serialization.py (_save, _legacy_save, _load, _legacy_load), torch/_utils.py.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor_dict.h"

namespace idsynth {

enum class CheckpointFormat { zip, legacy, unknown };

// Looks at the first bytes only.
CheckpointFormat detect_checkpoint_format(const std::string& path);

// Reads every tensor of a torch.save file; throws idsynth::Error naming the file and the problem.
TensorDict read_torch_checkpoint(const std::string& path);

// The same for a file already in memory (used by the fuzz target and tests).
TensorDict read_torch_checkpoint_bytes(const uint8_t* data, size_t size, const std::string& source);

}  // namespace idsynth

namespace idsynth {
// Writes tensors as `torch.save(OrderedDict(...))` does in the zip format (loadable with torch.load
// and by read_torch_checkpoint). Used by `idsynth init-model` for files like pytorch_model.bin.
void save_torch_checkpoint(const std::string& path, const TensorDict& tensors);
}  // namespace idsynth
