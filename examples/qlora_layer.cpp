// The README's example: a QLoRA layer trained with the recipe's AdamW, schedule, clipping and label smoothing.
#include <vidlora/vidlora.hpp>

#include <cstdio>

int main() {
  using namespace vidlora;
  using P = ActivePreset;  // -DVIDLORA_PRESET=T4|L4|A100|H100|Cpu picks the recipe's values
  LoraLinear<P::lora_r, P::lora_alpha, NF4Weight> layer(  // QLoRA: frozen NF4 base + LoRA
      Matrix::Random(64, 256), LoraOptions{.dropout = P::lora_dropout, .seed = 42});
  std::vector<optim::Parameter> params{{"q_proj.lora_A.weight", &layer.lora_A(), &layer.grad_A()},
                                       {"q_proj.lora_B.weight", &layer.lora_B(), &layer.grad_B()}};
  AdamW optimizer(optim::lora_b_only_groups(params, P::weight_decay));  // the recipe's "decay B only"
  const long total = 200;
  Scheduler<Cosine> schedule(
      {.base_lr = 1e-2, .warmup_steps = schedule::warmup_steps_for(P::warmup_ratio, total), .total_steps = total});
  const Matrix x = Matrix::Random(8, 256);
  const std::vector<int> labels{3, 1, -100, 7, 7, 2, -100, 0};  // -100: not supervised
  for (long step = 0; step < total; ++step) {
    const auto ce = loss::cross_entropy(layer.forward(x, true), labels, {.label_smoothing = P::label_smoothing});
    layer.zero_grad();
    layer.backward(ce.grad);
    clip_grad_norm(params, P::max_grad_norm);
    optimizer.step(schedule.lr(step));
    if (step % 50 == 0) std::printf("step %ld  loss %.4f  lr %.2e\n", step, ce.loss, schedule.lr(step));
  }
}
