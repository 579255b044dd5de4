#pragma once
// DecoderStep<backend::Cuda, Decoder>: the Trainer's decoder step on the device (train/decoder_step.hpp is the
// seam). A model::cuda::DecoderModel built from export_decoder_weights(decoder) at the first step holds the frozen
// weights, the LoRA factors and their gradients on the device; per micro-batch it uploads the collated embeddings (or,
// loss_and_backward_spliced, assembles them on the device from a model::splice_layout's text rows and the projector's
// output already there), runs loss_and_backward, downloads d loss / d embeds for the projector's backward (or keeps them on the device for a
// projector that reads them there: keep_grad_embeds_on_device), and keeps the LoRA gradients on
// the device for the whole training step (begin_step / finish_step, train/decoder_step.hpp): summed there, each clip's
// in float64 when the Trainer sums clip by clip (batch_invariant), and at finish_step either left there for the
// device optimizer (train/device_optimizer.hpp: the LoRA values change on the device and come to the CPU decoder
// when the host reads them) or handed to the host once — into the step's ClipGradientSum, or added to the CPU
// decoder's grad_A / grad_B — for the host's clipping and AdamW. Outside that bracket each call adds its gradients to
// grad_A / grad_B. The CPU
// decoder keeps the master LoRA values and the dropout counters: its layers' steps go to the device before each call
// and come back after it (the same masks, lora::dropout_stream), and LoRA values the CPU changed are uploaded before
// the next call (when the run's TrainableTensors::values_version() moved). Gradient checkpointing follows the CPU
// decoder's setting (the preset's gradient_checkpointing, through DecoderOptions) at every call. The evaluation runs
// on the same device model: eval_loss (DecoderModel::loss, no dropout) and generate (model::generate over
// model::cuda::CachedDecoder: the KV cache, the blocks and the LM head on the device, the search on the host).
// Status: compiled for sm_75..90; checked against the Cpu policy by tests/cuda/test_trainer_step.cu, which has not
// yet run on a GPU (docs/cuda.md).

#include <vidlora/core/portability.hpp>

#if !VIDLORA_KERNELS
#error "vidlora/train/cuda/decoder_step.cuh runs kernels: compile this translation unit with nvcc (LANGUAGE CUDA)"
#endif

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/backend.hpp>
#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/float64_sum.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/model/cuda/cached_decoder.cuh>
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/sequence_batch.hpp>
#include <vidlora/model/splice.hpp>
#include <vidlora/optim/device_parameter.hpp>
#include <vidlora/train/decoder_step.hpp>

namespace vidlora::train {

template <class Decoder>
class DecoderStep<backend::Cuda, Decoder> {
 public:
  using backend_type = backend::Cuda;
  DecoderStep(Decoder& decoder, const TrainableTensors& tensors, const DecoderStepSettings& settings = {})
      : decoder_(decoder), tensors_(tensors), settings_(settings) {}
  DecoderStep(const DecoderStep&) = delete;  // the allocator's hook holds `this`
  DecoderStep& operator=(const DecoderStep&) = delete;
  // Sums a failed step left running (the run stopping between its last call and finish_step) complete first, under the
  // communicator's timeout, before the device memory they use goes.
  ~DecoderStep() { complete_sums_in_flight(); }

  // As DecoderStep<backend::Cpu, Decoder>::loss_and_backward, on the device.
  // The device's loss refuses NaN / +Inf logits as the CPU's does (a vidlora::Error: the Trainer skips the step); any
  // other CUDA error (no device, out of memory, a failed launch) and a request over the memory cap (the
  // allocator's DeviceMemoryError, naming the tensor and the sizes) become a DeviceFailure, which stops the run.
  model::DecoderLossResultOf<float> loss_and_backward(const Matrix& embeds, const model::SequenceBatch& batch,
                                                      std::span<const int> labels,
                                                      const loss::CrossEntropyOptions& ce) {
    return guarded("step", [&] {
      kept_grad_embeds_ = {};  // the previous call's, before this call allocates
      prepared();
      return device_step(upload_embeds(embeds, batch, labels), batch, labels, ce);
    });
  }

  // loss_and_backward over model::assemble_embeds(layout, visual), the embeddings assembled on the device: the
  // layout's text rows uploaded from the host and its visual rows copied from `visual` ([visual_rows.size(), hidden]
  // row-major in device memory: the projector's output, CudaMlp2xGelu::forward_on_device, on the same stream), one copy
  // per run of consecutive rows. The same bits as loss_and_backward(assemble_embeds(layout, visual_on_host), ...);
  // neither the visual tokens come down nor the whole [tokens, hidden] input goes up (on the H100 preset's 16 frames,
  // 2,304 of its ~2,400 rows).
  model::DecoderLossResultOf<float> loss_and_backward_spliced(const model::SplicedLayout& layout, const float* visual,
                                                              const loss::CrossEntropyOptions& ce) {
    return guarded("step", [&] {
      kept_grad_embeds_ = {};
      prepared();
      return device_step(assemble_embeds(layout, visual), layout.batch, layout.labels, ce);
    });
  }

  // As DecoderStep<backend::Cpu, Decoder>::eval_loss, on the device (DecoderModel::loss: no dropout, no backward;
  // summed, so the loss is the sum itself), with the LoRA values the CPU holds now.
  EvalLoss eval_loss(const Matrix& embeds, const model::SequenceBatch& batch, std::span<const int> labels,
                     const loss::CrossEntropyOptions& ce) {
    return guarded("evaluation", [&] {
      require(ce.total_valid_tokens == 0, "DecoderStep<Cuda>::eval_loss: total_valid_tokens is a training option");
      model::cuda::DecoderModel& dev = prepared();
      const model::cuda::DeviceTensor x = upload_embeds(embeds, batch, labels);
      loss::cuda::LmHeadCeOptions o;
      o.label_smoothing = ce.label_smoothing;
      o.ignore_index = ce.ignore_index;
      o.sum_reduction = true;
      const model::DecoderLossTotals t =
          dev.loss(x, device_batch(batch), std::vector<int>(labels.begin(), labels.end()), o);
      return EvalLoss{t.loss, t.valid_tokens};
    });
  }

  // As DecoderStep<backend::Cpu, Decoder>::generate: model::generate over the device model's KV cache
  // (model/cuda/cached_decoder.cuh), the token embeddings from the CPU decoder.
  model::GenerationResult generate(const Matrix& prompt_embeds, const model::GenerationOptions& options) {
    return guarded("generation", [&] {
      model::cuda::CachedDecoder<Decoder> cached(prepared(), decoder_);
      return model::generate(cached, prompt_embeds, options);
    });
  }

  // A training step's bracket (train/decoder_step.hpp): its first call zeroes the device gradients; with per_clip each
  // call's gradients go into float64 sums on the device (and are zeroed for the next clip); finish_step hands the
  // trained ones over once (none in stage 1, where LoRA is not trained, so nothing is copied): the float64 sums into
  // `h.sums` (ClipGradientSum::sums_of) when the host still sums them over ranks, else rounded to float32 on the
  // device and added to grad_A / grad_B, as the float32 gradients are without per_clip — summed over the ranks on the
  // device first when `h.across_ranks` is set (comm::Nccl), also by a rank that ran no clip this step.
  void begin_step(bool per_clip) {
    complete_sums_in_flight();  // (none: finish_step or a failed call waited for them)
    in_step_ = true;
    per_clip_ = per_clip;
    step_calls_ = 0;
    overlap_.reset();
    layer_summed_.clear();
  }
  // With h.across_ranks (a comm::DeviceSum): the next training call is this rank's last of the step, so its gradients
  // are final block by block: as its backward finishes block l, block l's trained LoRA gradients (their float64 sums
  // with per_clip) start their sums over the ranks (DeviceSum::enqueue after the model's stream, one group per block),
  // overlapped with the backward of the blocks below; finish_step(h) sums the blocks not started (all of them when the
  // call failed before its backward, or on a rank without a clip this step) in the same groups and order — from the
  // last block down, on every rank — then waits for them all. `h` is what finish_step will be given.
  void overlap_sums_with_next_call(const StepHandOver& h) {
    require(in_step_ && h.across_ranks && !h.sums,
            "DecoderStep<Cuda>: overlapping the sums over the ranks needs a step bracket and a device sum, and the "
            "gradients summed on the device");
    overlap_ = h;
  }
  // The LoRA gradients this step sums on the device itself (per_clip): the ClipGradientSum leaves them to it.
  bool sums_on_device(const float* grad) const {
    if (!in_step_ || !per_clip_) return false;
    bool found = false;
    decoder_.for_each_lora(
        [&](const std::string&, auto& l) { found = found || l.grad_A().data() == grad || l.grad_B().data() == grad; });
    return found;
  }
  // Where a LoRA tensor (named by its grad_A / grad_B storage) lives on the device, for an optimizer stepping it there.
  std::optional<optim::DeviceParameter> device_parameter(const float* grad) {
    return guarded("step", [&]() -> std::optional<optim::DeviceParameter> {
      prepare();
      const auto& tensors = device_->model.lora_tensors();
      std::optional<optim::DeviceParameter> found;
      std::size_t i = 0;
      decoder_.for_each_lora([&](const std::string&, auto& l) {
        for (const Matrix* g : {&l.grad_A(), &l.grad_B()}) {
          if (g->data() == grad) found = optim::DeviceParameter{tensors[i].value, tensors[i].grad, tensors[i].size};
          ++i;
        }
      });
      return found;
    });
  }
  // The device's LoRA values are those of `values_version` (the optimizer stepped them there): no upload for it.
  void values_current(std::uint64_t values_version) {
    if (device_) uploaded_version_ = values_version;
  }
  // With keep (the Trainer, when its projector takes its gradient from the device: CudaMlp2xGelu::backward_rows), a
  // training call leaves d loss / d embeds on the device (kept_grad_embeds, until the next call or finish_step) and
  // returns an empty grad_embeds: the [tokens, hidden] floats neither come down nor go up again.
  void keep_grad_embeds_on_device(bool keep) { keep_grad_embeds_ = keep; }
  const float* kept_grad_embeds() const { return kept_grad_embeds_.data(); }

  // The caching allocator every device tensor of the run's decoder comes from (under its cap).
  vidlora::cuda::CudaCachingAllocator* device_allocator() {
    return guarded("step", [&] {
      prepare();
      return &device_->allocator;
    });
  }

  void finish_step(const StepHandOver& h) {
    kept_grad_embeds_ = {};  // back to the allocator: the step's last projector backward has read it
    if (!in_step_) return;
    in_step_ = false;
    struct SumsDone {  // the last call's sums are waited for by hand_over, or here when it failed before its wait
      DecoderStep& step;
      ~SumsDone() { step.complete_sums_in_flight(); }
    } done{*this};
    if (step_calls_ == 0 && !h.across_ranks) return;
    guarded("step", [&] { hand_over(h); });
  }

  // The device allocator over the calls since the previous take: the last call's state, the peaks of all.
  std::optional<MemoryStats> take_step_memory() {
    std::optional<MemoryStats> m = step_memory_;
    step_memory_.reset();
    return m;
  }

  // Not a vidlora::Error, which the Trainer takes for a refused loss: the program reports it and stops.
  struct DeviceFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

 private:
  // Runs f, turning a CUDA error other than the loss refusing NaN logits, and a request over the memory cap, into a
  // DeviceFailure naming what ran (`what`: step, evaluation, generation).
  template <class F>
  auto guarded(const char* what, F&& f) {
    try {
      return f();
    } catch (const DeviceMemoryError& e) {
      throw DeviceFailure(
          std::string("DecoderStep<Cuda>: out of device memory in the ") + what + ": " + e.what() +
          " (TrainerConfig::device_memory.max_memory_gb, --max-memory-gb of train_captioner and caption, sets the "
          "cap)");
    } catch (const vidlora::cuda::CudaError& e) {
      if (std::string_view(e.what()).find("NaN or +Inf in the logits") != std::string_view::npos) throw;
      throw DeviceFailure(std::string("DecoderStep<Cuda>: the device decoder ") + what + " failed: " + e.what());
    }
  }

  // The device model with the LoRA values the CPU holds now and the run's GEMM precision.
  model::cuda::DecoderModel& prepared() {
    prepare();
    model::cuda::DecoderModel& dev = device_->model;
    dev.set_gemm_compute(settings_.tf32 ? vidlora::cuda::Compute::TF32 : vidlora::cuda::Compute::F32);
    using B = DecoderStepSettings::BaseOperands;
    dev.set_base_operands(settings_.base_operands == B::BF16  ? vidlora::cuda::DType::BF16
                          : settings_.base_operands == B::F16 ? vidlora::cuda::DType::F16
                                                              : vidlora::cuda::DType::F32);
    return dev;
  }

  model::cuda::DeviceTensor upload_embeds(const Matrix& embeds, const model::SequenceBatch& batch,
                                          std::span<const int> labels) {
    require(embeds.rows() == batch.tokens() && embeds.cols() == device_->model.hidden(),
            "DecoderStep<Cuda>: embeds {} do not match batch {} x seq_len {} x hidden {}", shape_string(embeds),
            batch.batch, batch.seq_len, device_->model.hidden());
    require(static_cast<Eigen::Index>(labels.size()) == batch.tokens(), "DecoderStep<Cuda>: {} labels for {} tokens",
            labels.size(), batch.tokens());
    model::cuda::DeviceTensor x(&device_->allocator, embeds.rows(), embeds.cols(), "inputs_embeds");
    x.buffer.upload(std::span<const float>(embeds.data(), static_cast<std::size_t>(embeds.size())));
    return x;
  }
  model::cuda::DeviceTensor assemble_embeds(const model::SplicedLayout& l, const float* visual) {
    const std::int64_t hidden = device_->model.hidden(), tokens = l.batch.tokens();
    require(l.text_embeds.cols() == hidden && l.text_embeds.rows() == static_cast<Eigen::Index>(l.text_rows.size()) &&
                static_cast<std::int64_t>(l.text_rows.size() + l.visual_rows.size()) == tokens &&
                static_cast<std::int64_t>(l.labels.size()) == tokens && (visual != nullptr || l.visual_rows.empty()),
            "DecoderStep<Cuda>: a spliced batch of {} text rows {} and {} visual rows{} for {} tokens ({} labels) of "
            "hidden {}",
            l.text_rows.size(), shape_string(l.text_embeds), l.visual_rows.size(), visual ? "" : " (no device pointer)",
            tokens, l.labels.size(), hidden);
    model::cuda::DeviceTensor x(&device_->allocator, tokens, hidden, "inputs_embeds");
    const auto width = static_cast<std::size_t>(hidden);
    const auto copy_runs = [&](const std::vector<Eigen::Index>& rows, const float* from, cudaMemcpyKind kind) {
      model::for_each_row_run(rows, [&](std::size_t i, std::size_t j) {
        require(rows[i] >= 0 && rows[j - 1] < tokens, "DecoderStep<Cuda>: spliced rows {}..{} outside {} tokens",
                rows[i], rows[j - 1], tokens);
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(x.data() + static_cast<std::size_t>(rows[i]) * width, from + i * width,
                                           (j - i) * width * sizeof(float), kind, device_->model.stream()));
      });
    };
    copy_runs(l.text_rows, l.text_embeds.data(), cudaMemcpyHostToDevice);
    copy_runs(l.visual_rows, visual, cudaMemcpyDeviceToDevice);
    return x;
  }
  static model::cuda::DecoderBatch device_batch(const model::SequenceBatch& batch) {
    model::cuda::DecoderBatch b;
    b.batch = batch.batch;
    b.seq_len = batch.seq_len;
    b.attention_mask = batch.attention_mask;
    return b;
  }

  // One training call on input embeddings already on the device (after prepared()).
  model::DecoderLossResultOf<float> device_step(const model::cuda::DeviceTensor& x, const model::SequenceBatch& batch,
                                                std::span<const int> labels, const loss::CrossEntropyOptions& ce) {
    model::cuda::DecoderModel& dev = device_->model;
    const model::cuda::DecoderBatch b = device_batch(batch);
    loss::cuda::LmHeadCeOptions o;
    o.label_smoothing = ce.label_smoothing;
    o.ignore_index = ce.ignore_index;
    o.sum_reduction = ce.reduction == loss::Reduction::Sum;
    o.total_valid_tokens = ce.total_valid_tokens;
    o.grad_factor = ce.grad_factor;  // the loss scale of an fp16 run (GradScaler): the gradients carry it

    dev.set_gradient_checkpointing(decoder_.gradient_checkpointing());  // the preset's, through DecoderOptions
    dev.set_offload_checkpoints(settings_.offload_checkpoints);
    dev.set_pack_saved(settings_.pack_saved);
    dev.set_dropout_steps(lora_dropout_steps());
    if (!in_step_ || step_calls_ == 0) dev.zero_grad();  // a step's gradients accumulate from its first call
    const bool overlap = in_step_ && overlap_.has_value();
    if (overlap) {  // this rank's last call: each block's sums over the ranks start as its backward ends
      const std::vector<Matrix*> host = trained_host_gradients(*overlap_);
      const bool first = step_calls_ == 0;
      dev.set_after_layer_backward([this, host, first](std::size_t l) {
        if (l < layer_summed_.size() && layer_summed_[l]) return;  // started already (never twice)
        const auto [begin, end] = device_->model.lora_tensors_of_layer(l);
        if (per_clip_) take_clip_gradients(first, begin, end);
        sum_layer_over_ranks(l, host, *overlap_);
        if (!sums_in_flight_) sums_in_flight_ = SumsInFlight{overlap_->across_ranks, lora_sums_what(*overlap_)};
      });
      // cudaFree (the allocator giving cached blocks back under the cap) waits for the whole device, NCCL's kernels
      // included, which wait for the other ranks: the sums in flight complete first, under the communicator's
      // timeout, so that a rank that died is an error here rather than a hang there. From this call until finish_step
      // has waited for them (the projector's backward allocates after this call, from the same allocator).
      device_->allocator.set_before_release([this] { wait_sums_in_flight(); });
    }
    struct HookReset {  // the block hook and the armed hand-over belong to this call only
      DecoderStep& step;
      model::cuda::DecoderModel& dev;
      bool armed;
      int exceptions = std::uncaught_exceptions();
      ~HookReset() {
        if (!armed) return;
        dev.set_after_layer_backward({});
        // The call failed after some blocks' sums started: complete them (or let the communicator's timeout abort
        // it) before the run's teardown frees their buffers and destroys the communicator, which would block on them
        // without a timeout. Otherwise the allocator's wait stays until finish_step's.
        if (std::uncaught_exceptions() > exceptions) step.complete_sums_in_flight();
        if (!step.sums_in_flight_) step.device_->allocator.set_before_release({});
        step.overlap_.reset();
      }
    } hook_reset{*this, dev, overlap};
    auto r = [&] {
      try {
        return dev.loss_and_backward(x, b, std::vector<int>(labels.begin(), labels.end()), o);
      } catch (...) {
        // The loss refuses NaN logits after the forward drew this call's dropout masks: the CPU decoder's counters
        // have moved as far then (Decoder::forward advances them before its loss throws), so these move too.
        set_lora_dropout_steps(dev.dropout_steps());
        throw;
      }
    }();
    if (!in_step_)
      add_lora_grads();
    else if (per_clip_ && !overlap)  // (overlapped: each block's were taken as its backward ended)
      take_clip_gradients(step_calls_ == 0);
    ++step_calls_;
    set_lora_dropout_steps(dev.dropout_steps());
    step_memory_ = step_memory_ ? combine_intervals(*step_memory_, r.memory) : r.memory;

    model::DecoderLossResultOf<float> out;
    out.loss = r.loss;
    out.valid_tokens = r.valid_tokens;
    if (keep_grad_embeds_) {  // for the projector's backward_rows: nothing comes down
      kept_grad_embeds_ = std::move(r.grad_embeds);
      return out;
    }
    out.grad_embeds.resize(r.grad_embeds.rows, r.grad_embeds.cols);
    VIDLORA_CUDA_CHECK(cudaMemcpy(out.grad_embeds.data(), r.grad_embeds.data(),
                                  static_cast<std::size_t>(out.grad_embeds.size()) * sizeof(float),
                                  cudaMemcpyDeviceToHost));
    return out;
  }

  // Declared in this order so the model's buffers go back to the allocator before it is destroyed.
  struct Device {
    vidlora::cuda::CudaCachingAllocator allocator;  // every device tensor of the step, under the run's cap
    vidlora::cuda::GemmRunner gemm;
    model::cuda::DecoderModel model;
    Device(const model::DecoderHostWeights& w, std::size_t cap_bytes)
        : allocator(CachingAllocatorOptions{.cap_bytes = cap_bytes}), gemm(), model(gemm, w, nullptr, &allocator) {}
  };

  // The device model at the first step (the weights as the decoder holds them then), fresh LoRA values after.
  void prepare() {
    if (!device_) {
      device_ = std::make_unique<Device>(model::export_decoder_weights(decoder_), settings_.memory_cap_bytes);
      uploaded_version_ = tensors_.values_version();
      check_lora_layout();
      return;
    }
    if (uploaded_version_ == tensors_.values_version()) return;
    const auto& tensors = device_->model.lora_tensors();
    std::size_t i = 0;
    decoder_.for_each_lora([&](const std::string&, auto& l) {
      upload(tensors[i++], l.lora_A());
      upload(tensors[i++], l.lora_B());
    });
    uploaded_version_ = tensors_.values_version();
  }

  // Device LoRA tensors are the CPU layers' A and B in for_each_lora's order, of the same sizes.
  void check_lora_layout() {
    const auto& tensors = device_->model.lora_tensors();
    std::size_t i = 0;
    decoder_.for_each_lora([&](const std::string& path, auto& l) {
      require(
          i + 1 < tensors.size() && tensors[i].size == l.lora_A().size() && tensors[i + 1].size == l.lora_B().size(),
          "DecoderStep<Cuda>: the device model's LoRA tensors do not match the decoder's at {}", path);
      i += 2;
    });
    require(i == tensors.size(), "DecoderStep<Cuda>: the device model has {} LoRA tensors, the decoder {}",
            tensors.size(), i);
  }

  static void upload(const model::cuda::DecoderModel::LoraTensor& t, const Matrix& m) {
    VIDLORA_CUDA_CHECK(
        cudaMemcpy(t.value, m.data(), static_cast<std::size_t>(t.size) * sizeof(float), cudaMemcpyHostToDevice));
  }

  // per_clip: sums (first: =) += the device gradients in float64, then the gradients = 0 for the next clip; those of
  // lora_tensors()[begin, end) only when given.
  void take_clip_gradients(bool first, std::size_t begin = 0, std::size_t end = static_cast<std::size_t>(-1)) {
    const auto& tensors = device_->model.lora_tensors();
    if (sums_.size() != tensors.size()) {
      sums_.clear();
      for (const auto& t : tensors)
        sums_.emplace_back(&device_->allocator, static_cast<std::size_t>(t.size), "lora_grad_sums." + t.name);
    }
    for (std::size_t i = begin; i < std::min(end, tensors.size()); ++i)
      vidlora::cuda::take_into_float64(tensors[i].grad, sums_[i].data(), tensors[i].size, first,
                                       device_->model.stream());
  }

  // finish_step: the step's trained gradients (summed over the ranks first, with h.across_ranks) to the host, once.
  void hand_over(const StepHandOver& h) {
    prepared();  // a rank that ran no clip yet still takes part in the ranks' sums
    const auto& tensors = device_->model.lora_tensors();
    if (step_calls_ == 0) {   // no clip this step: zeros to sum (the device's gradients may hold an earlier step's)
      wait_sums_in_flight();  // before these writes
      device_->model.zero_grad();
      if (per_clip_) take_clip_gradients(true);
    }
    const std::vector<Matrix*> host = trained_host_gradients(h);
    if (h.across_ranks) {  // block by block from the last, those the last call did not start (comm::DeviceSum::enqueue)
      for (std::size_t l = static_cast<std::size_t>(device_->model.num_layers()); l-- > 0;)
        if (l >= layer_summed_.size() || !layer_summed_[l]) sum_layer_over_ranks(l, host, h);
      sums_in_flight_.reset();  // this wait covers them
      h.across_ranks.wait(lora_sums_what(h));
    }
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(device_->model.stream()));
    require(!(h.keep_on_device && h.sums),
            "DecoderStep<Cuda>: gradients kept on the device cannot also be summed on the host");
    if (!per_clip_) {  // the float32 gradients, accumulated over the step's micro-batches
      if (h.keep_on_device) return;
      return add_lora_grads(host);
    }
    if (!h.sums) {  // no other rank's sums to come: rounded to float32 here (half the bytes to copy, if copied)
      for (std::size_t k = 0; k < tensors.size(); ++k)
        if (host[k] != nullptr)  // the gradient buffer is zero after the last take: it receives the rounded sums
          vidlora::cuda::round_from_float64(sums_[k].data(), tensors[k].grad, tensors[k].size, device_->model.stream());
      VIDLORA_CUDA_CHECK(cudaStreamSynchronize(device_->model.stream()));
      if (h.keep_on_device) return;  // the optimizer steps them there
      return add_lora_grads(host);
    }
    for (std::size_t k = 0; k < tensors.size(); ++k) {  // the float64 sums, for the host's sum over the ranks
      if (host[k] == nullptr) continue;
      const auto n = static_cast<std::size_t>(tensors[k].size);
      const std::span<double> into = h.sums->sums_of(host[k]->data());  // left zero for us: copied, not added
      require(into.size() == n, "DecoderStep<Cuda>: the step's sums of a LoRA tensor hold {} values, the device {}",
              into.size(), n);
      VIDLORA_CUDA_CHECK(cudaMemcpy(into.data(), sums_[k].data(), n * sizeof(double), cudaMemcpyDeviceToHost));
    }
  }

  // The device LoRA tensors whose gradients the step hands over, in lora_tensors()' order: the CPU decoder's grad_A /
  // grad_B they go to, or null (not trained: not summed over the ranks, not copied).
  std::vector<Matrix*> trained_host_gradients(const StepHandOver& h) {
    std::vector<Matrix*> host(device_->model.lora_tensors().size(), nullptr);
    std::size_t i = 0;
    decoder_.for_each_lora([&](const std::string&, auto& l) {
      for (Matrix* g : {&l.grad_A(), &l.grad_B()}) {
        const bool trained =
            per_clip_ && h.sums ? !h.sums->sums_of(g->data()).empty() : !h.trained || h.trained(g->data());
        host[i++] = trained ? g : nullptr;
      }
    });
    return host;
  }
  // The sums over the ranks that the last call started and nobody has waited for yet: waited for once (also when the
  // wait throws: the communicator is failed then). The allocator's before-release hook runs it under its lock.
  void wait_sums_in_flight() {
    if (!sums_in_flight_) return;
    const SumsInFlight f = std::move(*sums_in_flight_);
    sums_in_flight_.reset();
    f.sums.wait(f.what);
  }
  // After a failure, at the end of a step and at teardown: waits for the sums in flight (their errors were reported
  // by whatever failed first, or come again from the communicator's next collective) and takes the allocator's hook
  // away.
  void complete_sums_in_flight() noexcept {
    try {
      wait_sums_in_flight();
    } catch (...) {
    }
    if (device_) device_->allocator.set_before_release({});
  }
  static std::string lora_sums_what(const StepHandOver& h) {
    return h.what.empty() ? std::string("the step's LoRA gradients") : h.what + " (LoRA)";
  }
  // Block l's trained gradients (float64 sums with per_clip, else the float32 gradients) summed over the ranks, started
  // after the work enqueued on the model's stream so far: one group, none when the block trains nothing.
  void sum_layer_over_ranks(std::size_t l, const std::vector<Matrix*>& host, const StepHandOver& h) {
    const auto& tensors = device_->model.lora_tensors();
    const auto [begin, end] = device_->model.lora_tensors_of_layer(l);
    std::vector<std::span<double>> f64;
    std::vector<std::span<float>> f32;
    for (std::size_t k = begin; k < end; ++k) {
      if (host[k] == nullptr) continue;
      const auto n = static_cast<std::size_t>(tensors[k].size);
      if (per_clip_)
        f64.emplace_back(sums_[k].data(), n);
      else
        f32.emplace_back(tensors[k].grad, n);
    }
    layer_summed_.resize(static_cast<std::size_t>(device_->model.num_layers()), 0);
    layer_summed_[l] = 1;
    if (f64.empty() && f32.empty()) return;
    const std::string what = fmt::format("{}, layer {}", lora_sums_what(h), l);
    void* stream = device_->model.stream();
    if (per_clip_)
      h.across_ranks.enqueue(std::span<const std::span<double>>(f64), stream, what);
    else
      h.across_ranks.enqueue(std::span<const std::span<float>>(f32), stream, what);
  }

  // grad_A / grad_B += the device gradients (of this call, or of the step's calls); only the tensors `host` names when
  // given (the device tensors' host gradients, null: not copied).
  void add_lora_grads(const std::vector<Matrix*>& host = {}) {
    const auto& tensors = device_->model.lora_tensors();
    std::size_t i = 0;
    const auto add = [&](const model::cuda::DecoderModel::LoraTensor& t, Matrix& g) {
      if (!host.empty() && host[i] == nullptr) return;
      scratch_.resize(static_cast<std::size_t>(t.size));
      VIDLORA_CUDA_CHECK(cudaMemcpy(scratch_.data(), t.grad, scratch_.size() * sizeof(float), cudaMemcpyDeviceToHost));
      float* out = g.data();
      const float* in = scratch_.data();
      const auto n = static_cast<std::int64_t>(scratch_.size());
      constexpr std::int64_t kBlock = std::int64_t{1} << 16;  // each element on its own: any thread count, same bits
      parallel_for(std::int64_t{0}, (n + kBlock - 1) / kBlock, n, [&](std::int64_t b) {
        const std::int64_t end = std::min(n, (b + 1) * kBlock);
        for (std::int64_t k = b * kBlock; k < end; ++k) out[k] += in[k];
      });
    };
    decoder_.for_each_lora([&](const std::string&, auto& l) {
      add(tensors[i], l.grad_A());
      ++i;
      add(tensors[i], l.grad_B());
      ++i;
    });
  }

  std::vector<std::uint64_t> lora_dropout_steps() {
    std::vector<std::uint64_t> steps;
    decoder_.for_each_lora([&](const std::string&, auto& l) { steps.push_back(l.step()); });
    return steps;
  }
  void set_lora_dropout_steps(const std::vector<std::uint64_t>& steps) {
    std::size_t i = 0;
    decoder_.for_each_lora([&](const std::string&, auto& l) { l.set_step(steps.at(i++)); });
  }

  Decoder& decoder_;
  const TrainableTensors& tensors_;  // values_version(): the LoRA values on the device are stale when it moved
  DecoderStepSettings settings_;
  std::optional<MemoryStats> step_memory_;
  std::unique_ptr<Device> device_;
  std::uint64_t uploaded_version_ = 0;
  std::vector<float> scratch_;
  // the training step's bracket (begin_step / finish_step)
  bool in_step_ = false, per_clip_ = false;
  long step_calls_ = 0;
  std::vector<vidlora::cuda::DeviceBuffer<double>> sums_;  // per_clip: each LoRA gradient's float64 sum this step
  std::optional<StepHandOver> overlap_;  // overlap_sums_with_next_call: the hand-over the next call starts summing
  std::vector<char> layer_summed_;       // this step: block l's sums over the ranks started
  struct SumsInFlight {
    comm::DeviceSum sums;
    std::string what;
  };
  std::optional<SumsInFlight> sums_in_flight_;  // started by the last call, until finish_step (or a failure) waits
  bool keep_grad_embeds_ = false;
  model::cuda::DeviceTensor kept_grad_embeds_;  // the last training call's d loss / d embeds, when kept
};

}  // namespace vidlora::train
