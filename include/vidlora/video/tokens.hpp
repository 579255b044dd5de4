#pragma once
// Visual token budgets per frame, for sizing sequences from the number of sampled frames.

namespace vidlora::video {

// CLIP ViT-L/14 at 336 px: (336 / 14)^2 patch tokens per frame.
inline constexpr int clip_vit_l14_336_tokens_per_frame = (336 / 14) * (336 / 14);
// LLaVA-NeXT-Video pools the 24 x 24 patch grid 2 x 2 (average), leaving 12 x 12 per frame.
inline constexpr int llava_next_video_pooled_tokens_per_frame = clip_vit_l14_336_tokens_per_frame / 4;

static_assert(clip_vit_l14_336_tokens_per_frame == 576);
static_assert(llava_next_video_pooled_tokens_per_frame == 144);

// Visual tokens for `frames` frames at `tokens_per_frame` each.
inline constexpr long long visual_tokens(int frames, int tokens_per_frame = llava_next_video_pooled_tokens_per_frame) {
  return static_cast<long long>(frames) * tokens_per_frame;
}

}  // namespace vidlora::video
