#pragma once
// vidlora loss: cross-entropy with label smoothing and ignore_index (as PyTorch), its streamed
// LM-head form that never holds [T, V] logits, and token-mean normalisation across the
// micro-batches of a gradient-accumulation step.

#include <vidlora/loss/log_sum_exp.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/loss/cross_entropy.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/loss/gradient_accumulation.hpp>
