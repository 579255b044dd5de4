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

namespace vidlora {
using io::AtomicFile;
using io::bf16_bits_to_float;
using io::CheckpointDir;
using io::CheckpointReadOptions;
using io::Dtype;
using io::dtype_name;
using io::dtype_size;
using io::float_to_bf16_bits;
using io::float_to_fp16_bits;
using io::fp16_bits_to_float;
using io::CheckpointLayout;
using io::MappedFile;
using io::ModelCheckpoint;
using io::ModelPart;
using io::round_to_bf16;
using io::round_to_fp16;
using io::SafetensorsFile;
using io::serialize_safetensors;
using io::TensorData;
using io::TensorInfo;
using io::TensorMap;
using io::write_file_atomically;
using io::write_safetensors;
}  // namespace vidlora
