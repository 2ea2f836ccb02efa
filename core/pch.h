// Precompiled once, shared by every idsynth target (the torch headers dominate build time).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <map>
#include <memory>
#include <string>
#include <vector>
