#pragma once
// The single-rounding helpers of core/rounding.hpp under vidlora::cuda, where the kernels have always
// called them (nvcc contracts a*b + c into one FMA by default; the CPU reference rounds twice).

#include <vidlora/core/rounding.hpp>

namespace vidlora::cuda {

using vidlora::add_rn;
using vidlora::mul_rn;
using vidlora::sub_rn;

}  // namespace vidlora::cuda
