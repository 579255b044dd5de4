#pragma once
// vidlora core: version, portability macros, backend policies, errors, matrices, the counter-based RNG.

#include <vidlora/core/version.hpp>
#include <vidlora/core/portability.hpp>
#include <vidlora/core/backend.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
