#pragma once
// Per-thread scratch that outlives a call. A kernel's parallel body used to
// build a fresh vector per chunk (one item with grain 1): a malloc and a
// zero fill of up to ~100 KB per item, half the time of a small prefill
// call. Each thread now keeps its buffers, grown to the largest call it has
// served (a few hundred KB at D = 512). What they hold on entry is whatever
// the thread's last call left: the kernels write every element before they
// read it. Kernel bodies do not nest, so a slot has one user at a time.
#include <vector>

namespace fattn::detail {

enum class ScratchSlot { work = 0, reduce = 1 };

inline std::vector<float>& thread_scratch(ScratchSlot slot) {
  thread_local std::vector<float> buffers[2];
  return buffers[int(slot)];
}

}  // namespace fattn::detail
