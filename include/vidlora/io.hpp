#pragma once
// vidlora io: the files users already have. bf16/fp16 conversion, safetensors reading
// (memory-mapped, validated) and writing (atomic, byte-compatible with the Python library),
// sharded Hugging Face checkpoint directories.

#include <vidlora/core.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/io/dtype.hpp>
#include <vidlora/io/mapped_file.hpp>
#include <vidlora/io/atomic_file.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/io/model_checkpoint.hpp>
