#pragma once
// ClipFeatures: what the programs' model classes (demo_common.hpp, hf_model.hpp) give for a clip's frozen vision
// features, through their FeatureCache: get (also the call operator) returns them, computed and stored on a miss;
// ensure only makes sure they are stored, leaving a valid entry unread (train_captioner runs it over every clip
// before training, while the GPU vision tower has the card to itself: encode_clips_up_front, split over MPI ranks).
// A clip's note (support/sampling_notes.hpp: a short clip, damage FFmpeg decoded through), kept in the cache with its
// features, is told on stderr once per process, whether the features were computed or read from the cache.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/feature_cache.hpp>

namespace demo {

// Tells each clip's note once per process, on stderr: when its features are computed, and when they are read from
// the cache unless told not to (a rank other than 0 of several leaves those to rank 0, which reads every clip).
class ClipNotes {
 public:
  void tell(const std::filesystem::path& video, const std::string& note, bool computed) {
    if (note.empty()) return;
    const std::lock_guard<std::mutex> lock(mutex_);
    if ((!computed && !cached_) || !told_.insert(video.string()).second) return;
    fmt::print(stderr, "\n{}", note);  // (after a progress line that has no line end)
  }
  void tell_cached(bool on) {
    const std::lock_guard<std::mutex> lock(mutex_);
    cached_ = on;
  }

 private:
  std::mutex mutex_;
  std::set<std::string> told_;
  bool cached_ = true;
};

struct ClipFeatures {
  std::function<vidlora::Matrix(const std::filesystem::path&)> get;
  std::function<bool(const std::filesystem::path&)> ensure;  // true: computed now
  std::shared_ptr<ClipNotes> notes = std::make_shared<ClipNotes>();

  vidlora::Matrix operator()(const std::filesystem::path& video) const { return get(video); }
  // Whether the notes of clips read from the cache are told (on by default); every copy shares the setting.
  void tell_cached_notes(bool on) const { notes->tell_cached(on); }
};

// The tower a GPU build encodes the frames with (gpu_program.hpp's device_encoder) and how to give its device memory
// back once every clip is encoded; null and nothing to release: the CPU tower.
struct DeviceEncoder {
  std::shared_ptr<const vidlora::model::FrameEncoder> encoder;
  std::function<void()> release_device = [] {};
};

// The features of one sampler, frame count and encoder id, kept in `cache`; `compute` encodes a clip on a miss, with
// its note.
inline ClipFeatures cached_clip_features(std::shared_ptr<vidlora::train::FeatureCache> cache, std::string sampler,
                                         int frames, std::string encoder_id,
                                         vidlora::train::FeatureCache::NotedCompute compute) {
  const auto key = [sampler = std::move(sampler), frames, id = std::move(encoder_id)](const std::filesystem::path& v) {
    return vidlora::train::FeatureKey{v, sampler, frames, id};
  };
  ClipFeatures f;
  f.get = [cache, key, compute, notes = f.notes](const std::filesystem::path& v) {
    bool computed = false;
    auto noted = cache->get_noted(key(v), [&](const std::filesystem::path& video) {
      computed = true;
      return compute(video);
    });
    notes->tell(v, noted.note, computed);
    return std::move(noted.features);
  };
  f.ensure = [cache, key, compute, notes = f.notes](const std::filesystem::path& v) {
    std::string note;
    const bool computed = cache->ensure_noted(key(v), compute, &note);
    notes->tell(v, note, computed);
    return computed;
  };
  return f;
}
// ... for an encoder with nothing to note.
inline ClipFeatures cached_clip_features(std::shared_ptr<vidlora::train::FeatureCache> cache, std::string sampler,
                                         int frames, std::string encoder_id,
                                         std::function<vidlora::Matrix(const std::filesystem::path&)> compute) {
  return cached_clip_features(std::move(cache), std::move(sampler), frames, std::move(encoder_id),
                              [compute = std::move(compute)](const std::filesystem::path& v) {
                                return vidlora::train::NotedFeatures{compute(v), {}};
                              });
}

// What ensure_clips did.
struct EnsuredClips {
  std::size_t encoded = 0;  // clips it encoded (the others were in the cache, or failed)
  std::size_t failed = 0;   // clips whose features could not be made
};

// An error that is the device's, not the clip's (ensure_clips then stops): every clip would fail the same way.
using FatalError = std::function<bool(const std::exception&)>;

// Makes sure `clips` are in the cache (ClipFeatures::ensure: clips cached before, e.g. when resuming, are not read
// back), with a progress line every few seconds to `out` (null: silent) and the first failures to `errors` (null:
// `out`). A clip that fails here (a corrupt video) fails the same way when the Trainer asks for it, which counts and
// names it as it always does; an error `fatal` says is not the clip's (a CUDA error, the memory cap) is thrown on.
// Stops before the next clip once `*stop` is set (Ctrl-C; the clips encoded so far stay in the cache).
inline EnsuredClips ensure_clips(const ClipFeatures& feats, const std::vector<const vidlora::train::Clip*>& clips,
                                 std::FILE* out, std::string_view what, const std::atomic<bool>* stop = nullptr,
                                 const FatalError& fatal = {}, std::FILE* errors = nullptr) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto last = start;
  std::size_t failed = 0, encoded = 0;
  std::FILE* err = errors ? errors : out;
  for (std::size_t i = 0; i < clips.size(); ++i) {
    if (stop && stop->load()) {
      if (out) fmt::print(out, "{}: stopped after {} of {} clips ({} encoded)\n", what, i, clips.size(), encoded);
      break;
    }
    try {
      if (feats.ensure(clips[i]->video)) ++encoded;
    } catch (const std::exception& e) {
      if (fatal && fatal(e)) {
        if (err) fmt::print(err, "{}: clip {} failed, and no clip can be encoded: {}\n", what, clips[i]->id, e.what());
        throw;
      }
      // named here (the first few; the Trainer names every skipped clip again), not only counted
      if (++failed <= 3 && err)
        fmt::print(err, "{}: clip {} failed: {}{}\n", what, clips[i]->id, e.what(),
                   failed == 3 ? " (further failures are counted only)" : "");
    }
    const auto now = clock::now();
    if (out && (now - last > std::chrono::seconds(5) || i + 1 == clips.size())) {
      last = now;
      const double s = std::chrono::duration<double>(now - start).count();
      const double rate = static_cast<double>(i + 1) / (s > 0.0 ? s : 1e-9);
      fmt::print(out, "{}: {}/{} ({} encoded, {} cached before, {} failed; {:.1f} clips/s, ETA {:.0f} s)\n", what,
                 i + 1, clips.size(), encoded, i + 1 - encoded - failed, failed, rate,
                 static_cast<double>(clips.size() - i - 1) / rate);
      std::fflush(out);
    }
  }
  return {encoded, failed};
}

// What encode_clips_up_front did on this rank.
struct UpFrontEncoding {
  std::size_t encoded = 0;   // clips this rank encoded (the others were in the cache)
  std::size_t failed = 0;    // of all the clips, those whose features this rank could not make or find
  bool interrupted = false;  // `*stop` was set on some rank: every rank stops (the encoded clips stay cached)
};

// Every clip of the run in the cache before the Trainer starts (a GPU build: while the vision tower has the card to
// itself). With several ranks (Comm: rank(), size(), all_reduce_sum(span<double>, what)) each first
// encodes its share (clip i on rank i mod N), so on a cache the ranks share no two of them encode or write the same
// clip; after a collective each rank ensures all of them, which on a shared cache only checks the entries' headers and
// on per-node caches encodes what the other nodes' ranks did. `stop` (Ctrl-C) ends the encoding at the next clip; with
// ranks, a stop on any of them is summed after each pass, so all stop together and none waits for another in a
// collective the stopped one never reaches. `fatal` and `errors`: ensure_clips's.
template <class Comm>
UpFrontEncoding encode_clips_up_front(const ClipFeatures& feats, const std::vector<const vidlora::train::Clip*>& clips,
                                      Comm& ranks, std::FILE* out, const std::atomic<bool>* stop = nullptr,
                                      const FatalError& fatal = {}, std::FILE* errors = nullptr) {
  const auto stopped = [&] { return stop != nullptr && stop->load(); };
  if (ranks.size() == 1) {
    const EnsuredClips e = ensure_clips(feats, clips, out, "encoding clips on the GPU", stop, fatal, errors);
    return {e.encoded, e.failed, stopped()};
  }
  const auto any_rank_stopped = [&](std::string_view what) {
    std::array<double, 1> flag{stopped() ? 1.0 : 0.0};
    ranks.all_reduce_sum(std::span<double>(flag), what);
    return flag[0] > 0.0;
  };
  std::vector<const vidlora::train::Clip*> share;
  for (std::size_t i = static_cast<std::size_t>(ranks.rank()); i < clips.size();
       i += static_cast<std::size_t>(ranks.size()))
    share.push_back(clips[i]);
  UpFrontEncoding r;
  r.encoded =
      ensure_clips(feats, share, out,
                   fmt::format("encoding clips on the GPU (rank {}'s share of {} ranks)", ranks.rank(), ranks.size()),
                   stop, fatal, errors)
          .encoded;
  // (a collective: every rank's share is written when it returns)
  if (any_rank_stopped("the up-front clip encoding (each rank encodes its share; raise --comm-timeout for a long one)"))
    return {r.encoded, 0, true};
  const EnsuredClips all =
      ensure_clips(feats, clips, out,
                   fmt::format("checking every clip's features on rank {} (the cache may be per node)", ranks.rank()),
                   stop, fatal, errors);
  r.encoded += all.encoded;
  r.failed = all.failed;
  r.interrupted = any_rank_stopped("the check of every clip's features");
  return r;
}

}  // namespace demo
