#pragma once
// fattn: the mlx-native attention kernel family on the CPU. One include for all of it.
#include "fattn/build_info.hpp"
#include "fattn/decode.hpp"
#include "fattn/dtype.hpp"
#include "fattn/error.hpp"
#include "fattn/parallel.hpp"
#include "fattn/prefill.hpp"
#include "fattn/quant.hpp"
#include "fattn/sdpa.hpp"
#include "fattn/tensor.hpp"
