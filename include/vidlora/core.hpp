#pragma once
// vidlora core: version, portability macros, backend policies, errors, matrices, the counter-based RNG, the capped caching
// allocator (over an upstream: host here, CUDA in core/cuda/cuda_upstream.cuh).

#include <vidlora/core/version.hpp>
#include <vidlora/core/portability.hpp>
#include <vidlora/core/backend.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/core/rounding.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/host_upstream.hpp>
