#pragma once
// Caption generation (greedy and beam search with a KV cache) lives in model/generation.hpp, beside the
// decoder whose generate_greedy runs it; the train module names it here as before.

#include <vidlora/model/generation.hpp>

namespace vidlora::train {
using model::apply_processors;
using model::apply_repetition_penalty;
using model::banned_ngram_tokens;
using model::generate;
using model::GenerationOptions;
using model::GenerationResult;
}  // namespace vidlora::train
