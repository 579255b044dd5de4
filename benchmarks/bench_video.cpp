// Video decoding and frame sampling on a 1080p 30 fps H.264 clip of 21 s with known cuts.
//  - decode-only (the baseline) vs Sampler<SceneChange> and Sampler<Motion> (goal: <= 1.15x decode-only)
//  - Sampler<Uniform> 8 frames with keyframe seeking vs decoding every frame
//  - detect_scene_changes with its cut F1 against the known cuts (compare benchmarks/video_scenedetect.py)
// The clip is made once by ffmpeg and cached in /tmp/vidlora-bench (GOP 60 frames, x264 preset fast, CRF 23).
// Timings are wall clock (decoding is multi-threaded); the cpu_s counter is process CPU seconds per run.
#include <benchmark/benchmark.h>

#include <vidlora/video.hpp>

#include <sys/resource.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace vidlora;

const std::vector<std::int64_t> known_cuts{105, 225, 315, 450, 525};
constexpr std::int64_t clip_frames = 630;

const std::filesystem::path& bench_clip() {
  static const std::filesystem::path path = [] {
    const std::filesystem::path dir = "/tmp/vidlora-bench";
    std::filesystem::create_directories(dir);
    const auto out = dir / "cuts_1080p_21s.mp4";
    if (!std::filesystem::exists(out)) {
      const auto tmp = dir / "cuts_1080p_21s.tmp.mp4";
      const std::string cmd =
          "ffmpeg -v error -y -nostdin "
          "-f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i gradients=size=1920x1080:rate=30:speed=0.02 "
          "-f lavfi -i smptehdbars=size=1920x1080:rate=30 -f lavfi -i testsrc2=size=1920x1080:rate=30 "
          "-f lavfi -i testsrc=size=1920x1080:rate=30 -f lavfi -i rgbtestsrc=size=1920x1080:rate=30 -filter_complex "
          "\"[0:v]trim=end_frame=105,setpts=PTS-STARTPTS[a];[1:v]trim=end_frame=120,setpts=PTS-STARTPTS[b];"
          "[2:v]trim=end_frame=90,setpts=PTS-STARTPTS[c];"
          "[3:v]trim=start_frame=300:end_frame=435,setpts=PTS-STARTPTS,negate,hflip[d];"
          "[4:v]trim=end_frame=75,setpts=PTS-STARTPTS[e];[5:v]trim=end_frame=105,setpts=PTS-STARTPTS[f];"
          "[a][b][c][d][e][f]concat=n=6:v=1,format=yuv420p[v]\" -map \"[v]\" "
          "-c:v libx264 -preset fast -crf 23 -g 60 -pix_fmt yuv420p " +
          tmp.string();
      std::fprintf(stderr, "bench_video: generating %s (once)\n", out.c_str());
      if (std::system(cmd.c_str()) != 0) std::abort();
      std::filesystem::rename(tmp, out);
    }
    std::ofstream(dir / "cuts_1080p_21s.json") << R"({"cuts": [105, 225, 315, 450, 525], "frames": 630, "fps": 30})";
    video::set_ffmpeg_log_level(AV_LOG_ERROR);
    return out;
  }();
  return path;
}

double process_cpu_seconds() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

// F1 of detected cuts against known ones, a detection within one frame counting as a hit.
double cut_f1(const std::vector<std::int64_t>& found) {
  std::vector<bool> used(known_cuts.size(), false);
  int hits = 0;
  for (auto c : found)
    for (std::size_t i = 0; i < known_cuts.size(); ++i)
      if (!used[i] && std::llabs(c - known_cuts[i]) <= 1) {
        used[i] = true;
        ++hits;
        break;
      }
  if (found.empty()) return 0.0;
  const double precision = static_cast<double>(hits) / static_cast<double>(found.size());
  const double recall = static_cast<double>(hits) / static_cast<double>(known_cuts.size());
  return hits ? 2 * precision * recall / (precision + recall) : 0.0;
}

void finish(benchmark::State& state, double cpu, std::int64_t frames_decoded) {
  state.SetItemsProcessed(state.iterations() * clip_frames);  // frames of video covered per second
  state.counters["cpu_s"] = benchmark::Counter(cpu / static_cast<double>(state.iterations()));
  state.counters["decoded"] = benchmark::Counter(static_cast<double>(frames_decoded));
}

// Baseline: every frame decoded (FFmpeg frame threading), nothing else.
void BM_DecodeOnly(benchmark::State& state) {
  const auto& path = bench_clip();
  std::int64_t frames = 0;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    video::VideoDecoder decoder(path);
    frames = decoder.decode([](const video::DecodedFrame&) { return true; }).frames;
    benchmark::DoNotOptimize(frames);
  }
  finish(state, process_cpu_seconds() - cpu0, frames);
}

// Sampler<Policy> at the defaults (8 frames, 336 x 336 RGB).
template <class Policy>
void BM_Sample(benchmark::State& state) {
  const auto& path = bench_clip();
  SamplerOptions o{};
  o.seek = state.range(0) != 0;
  video::Sampling s;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    s = Sampler<Policy>(o).sample_with_report(path);
    benchmark::DoNotOptimize(s.frames.data());
  }
  finish(state, process_cpu_seconds() - cpu0, s.report.frames_decoded);
  if (s.frames.size() != 8) state.SkipWithError("wrong frame count");
}

void BM_DetectSceneChanges(benchmark::State& state) {
  const auto& path = bench_clip();
  std::vector<std::int64_t> cuts;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    cuts = video::detect_scene_changes(path, SceneChangeOptions{.skip_loop_filter = state.range(0) != 0});
    benchmark::DoNotOptimize(cuts.data());
  }
  finish(state, process_cpu_seconds() - cpu0, clip_frames);
  state.counters["cut_f1"] = cut_f1(cuts);
  state.counters["cuts_found"] = static_cast<double>(cuts.size());
}

}  // namespace

BENCHMARK(BM_DecodeOnly)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
// range(0): 1 = Uniform seeks to keyframes, 0 = decode every frame (SceneChange / Motion always decode all)
BENCHMARK_TEMPLATE(BM_Sample, Uniform)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK_TEMPLATE(BM_Sample, SceneChange)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK_TEMPLATE(BM_Sample, Motion)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
// range(0): 1 = decode without the deblocking filter (SceneChangeOptions::skip_loop_filter)
BENCHMARK(BM_DetectSceneChanges)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
