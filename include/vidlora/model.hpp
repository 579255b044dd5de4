#pragma once
// vidlora model: the LLaMA / Qwen2 / Qwen3 decoder with LoRA slots, the CLIP vision tower,
// projectors, splicing of visual tokens into the prompt, configs from HF config.json, tokenizers.
// Needs the vidlora::model target (it links SentencePiece for the LLaMA tokenizer).

#include <vidlora/core.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/tensor_source.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/model/rope_frequencies.hpp>
#include <vidlora/model/rope_scaling.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/bf16_weight.hpp>
#include <vidlora/model/linear_slot.hpp>
#include <vidlora/model/sequence_batch.hpp>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/decoder_layer_cpu.hpp>
#include <vidlora/model/decoder_model_steps.hpp>
#include <vidlora/model/decoder_step_memory.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/generation_config.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_host_weights.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/held_adapter.hpp>
#include <vidlora/model/peft_decoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/splice.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/model/llava_model.hpp>
#include <vidlora/model/llava_processor.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/model/tokenizer.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>
#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_chat_template.hpp>
#include <vidlora/model/jinja_value.hpp>
#include <vidlora/model/jinja_template.hpp>
#include <vidlora/model/tokenizer_loader.hpp>
