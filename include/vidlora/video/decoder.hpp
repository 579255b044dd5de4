#pragma once
// VideoDecoder: opens a file with libavformat, decodes its best video stream with libavcodec's
// frame threading, and reports each frame's position from the decoded timestamps (never from the
// frame count or frame rate the container states, which are often wrong).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/video/ffmpeg.hpp>
#include <vidlora/video/frame.hpp>

namespace vidlora::video {

struct VideoDecoderOptions {
  int threads = 0;  // decoder threads (frame threading); 0 lets FFmpeg use one per core
  // Skip the in-loop deblocking filter (H.264/HEVC): faster, slightly blockier pixels. For passes
  // that only measure frames (detect_scene_changes), never for frames handed to a model.
  bool skip_loop_filter = false;
};

// What the container and codec say about the video stream. Only `time_base` and the decoded
// timestamps are trusted for positions; `reported_frame_count` is kept to show how wrong it can be.
struct StreamInfo {
  std::filesystem::path path;
  int stream_index = -1;
  std::string codec_name;
  int width = 0;
  int height = 0;
  double duration = 0.0;  // seconds; stream duration, else the container's; 0 when unknown
  double avg_fps = 0.0;   // average frame rate; 0 when unknown
  int time_base_num = 0;  // one pts tick is time_base_num / time_base_den seconds
  int time_base_den = 1;
  std::int64_t start_pts = 0;             // pts of the stream start (timestamps are relative to it)
  std::int64_t reported_frame_count = 0;  // nb_frames from the container; 0 = not stated
  double time_base() const { return static_cast<double>(time_base_num) / time_base_den; }
};

// How a decode pass ended. A damaged file is not an exception here: the frames before the damage
// were delivered, and `damaged` / `problem` / `byte_offset` say where and why it stopped.
//
// Damage FFmpeg decodes through is counted apart: a frame whose bitstream was corrupt comes out with the broken
// blocks guessed from their neighbours (error concealment: FFmpeg logs "error while decoding MB ..." / "concealing
// ... errors") and flagged (AVFrame::decode_error_flags, AV_FRAME_FLAG_CORRUPT); the pass goes on. FFmpeg's H.264
// decoder conceals and flags such frames only without frame threading: decode with threads = 1 (the programs do).
// Even then some damage decodes wrong with no flag (a review scrambled each of a test clip's 137 P slices in the
// middle: 23 were not flagged). With frame threads it flagged 3 of 12 damaged test clips and delivered the other 9's
// broken frames unflagged (FFmpeg 5.1; docs/video.md, "Errors").
struct DecodeStatus {
  std::int64_t frames = 0;                  // frames delivered by this pass
  bool damaged = false;                     // stopped on a read or decode error, not at a clean end of file
  std::string problem;                      // FFmpeg's message for the error ("Invalid data found ...")
  std::int64_t byte_offset = -1;            // file position where reading failed (-1 unknown)
  double last_timestamp = -1.0;             // timestamp of the last good frame (-1: none)
  std::int64_t concealed_frames = 0;        // frames delivered with concealed damage (DecodedFrame::concealed)
  double first_concealed_timestamp = -1.0;  // timestamp of the first of them (-1: none)

  std::string where() const {
    return fmt::format("after {} good frame(s) (last good frame at {:.3f} s), byte offset {}: {}", frames,
                       last_timestamp, byte_offset, problem);
  }

  // "" when no frame was concealed, else "FFmpeg concealed damage in 2 of 120 decoded frames, the first at 1.833 s"
  // (the frames after such a frame, up to the next keyframe, show the damage too without being counted).
  std::string concealment() const {
    if (concealed_frames == 0) return {};
    return fmt::format("FFmpeg concealed damage in {} of {} decoded frame{}, the first at {:.3f} s", concealed_frames,
                       frames, frames == 1 ? "" : "s", first_concealed_timestamp);
  }
};

// One decoded frame, valid only during the visit callback. index: 0-based output order since the
// start of the pass (-1 after a seek, when the caller maps pts to an index itself).
struct DecodedFrame {
  std::int64_t index = -1;
  std::int64_t pts = 0;
  double timestamp = 0.0;
  const AVFrame* frame = nullptr;
  bool concealed = false;  // the decoder flagged damage it concealed in this frame (see DecodeStatus)
};

// Demuxed (not decoded) packet facts of the video stream: presentation timestamps in increasing
// order — entry i is frame i — and which of them are keyframes. Built by scanning the file.
struct PacketIndex {
  std::vector<std::int64_t> pts;  // sorted
  std::vector<bool> keyframe;     // same order as pts
  DecodeStatus status;            // damaged when the scan hit a read error
  bool complete = true;           // false when some packet had no timestamp (index unusable)
  bool rewound = true;            // false when the file could not seek back to its start
};

class VideoDecoder {
 public:
  explicit VideoDecoder(std::filesystem::path path, VideoDecoderOptions options = {}) {
    info_.path = std::move(path);
    open(options);
  }

  const StreamInfo& info() const { return info_; }
  const std::filesystem::path& path() const { return info_.path; }

  double seconds(std::int64_t pts) const { return static_cast<double>(pts - info_.start_pts) * info_.time_base(); }

  // Decodes from the current position to the end (or until `visit` returns false), calling
  // visit(const DecodedFrame&) for each frame in presentation order.
  template <class Visit>
  DecodeStatus decode(Visit&& visit) {
    DecodeStatus status;
    bool stop = false;
    auto drain = [&]() -> bool {  // receive every frame the decoder has ready; false on error
      for (;;) {
        const int r = avcodec_receive_frame(codec_.get(), frame_.get());
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return true;
        if (r < 0) {
          mark_damage(status, r);
          return false;
        }
        std::int64_t pts = frame_->best_effort_timestamp;
        if (pts == AV_NOPTS_VALUE) pts = frame_->pts;
        if (pts == AV_NOPTS_VALUE) pts = last_pts_ + default_step();
        last_pts_ = pts;
        const bool concealed = frame_->decode_error_flags != 0 || (frame_->flags & AV_FRAME_FLAG_CORRUPT) != 0;
        DecodedFrame decoded{sequential_ ? next_index_ : -1, pts, seconds(pts), frame_.get(), concealed};
        if (sequential_) ++next_index_;
        ++status.frames;
        status.last_timestamp = decoded.timestamp;
        if (concealed && status.concealed_frames++ == 0) status.first_concealed_timestamp = decoded.timestamp;
        const bool go_on = visit(static_cast<const DecodedFrame&>(decoded));
        av_frame_unref(frame_.get());
        if (!go_on) {
          stop = true;
          return true;
        }
      }
    };
    // Frames left ready by a previous call that stopped early come first: the decoder only takes a
    // new packet once its output is drained (then avcodec_send_packet never answers EAGAIN).
    if (!drain()) return status;
    while (!stop) {
      const int r = av_read_frame(format_.get(), packet_.get());
      if (r == AVERROR_EOF) break;
      if (r < 0) {
        mark_damage(status, r);
        break;
      }
      if (packet_->stream_index != info_.stream_index) {
        av_packet_unref(packet_.get());
        continue;
      }
      const bool corrupt = (packet_->flags & AV_PKT_FLAG_CORRUPT) != 0;
      const std::int64_t packet_pos = packet_->pos;
      const int s = avcodec_send_packet(codec_.get(), packet_.get());
      av_packet_unref(packet_.get());
      if (s < 0) {
        mark_damage(status, s);
        break;
      }
      if (!drain()) break;
      if (corrupt) {  // a packet cut short by the end of the file: what follows is lost
        mark_damage(status, AVERROR_INVALIDDATA, packet_pos);
        break;
      }
    }
    if (!stop) {                                   // flush the frames the threads still hold, also after damage
      avcodec_send_packet(codec_.get(), nullptr);  // AVERROR_EOF when already flushing: harmless
      const bool was_damaged = status.damaged;
      const DecodeStatus before = status;
      drain();
      if (was_damaged) {  // keep the first problem, count the flushed frames
        status.damaged = true;
        status.problem = before.problem;
        status.byte_offset = before.byte_offset;
      }
      if (!stop) {  // all delivered; when stopped mid-flush the rest stays for the next call
        avcodec_flush_buffers(codec_.get());
        at_end_ = true;
      }
    }
    return status;
  }

  // Reads every packet of the video stream without decoding and returns their timestamps, then
  // rewinds to the start (PacketIndex::rewound says whether that worked).
  PacketIndex scan_packets() {
    PacketIndex index;
    std::vector<std::pair<std::int64_t, bool>> entries;
    for (;;) {
      const int r = av_read_frame(format_.get(), packet_.get());
      if (r == AVERROR_EOF) break;
      if (r < 0) {
        mark_damage(index.status, r);
        break;
      }
      if (packet_->stream_index == info_.stream_index && !(packet_->flags & AV_PKT_FLAG_DISCARD)) {
        if (packet_->pts == AV_NOPTS_VALUE) index.complete = false;
        if (packet_->flags & AV_PKT_FLAG_CORRUPT) {
          mark_damage(index.status, AVERROR_INVALIDDATA, packet_->pos);
          av_packet_unref(packet_.get());
          break;
        }
        entries.emplace_back(packet_->pts, (packet_->flags & AV_PKT_FLAG_KEY) != 0);
      }
      av_packet_unref(packet_.get());
    }
    std::sort(entries.begin(), entries.end());
    for (std::size_t i = 1; i < entries.size() && index.complete; ++i)
      if (entries[i].first == entries[i - 1].first) index.complete = false;  // duplicate pts
    index.pts.reserve(entries.size());
    for (const auto& [pts, key] : entries) {
      index.pts.push_back(pts);
      index.keyframe.push_back(key);
    }
    index.status.frames = static_cast<std::int64_t>(entries.size());
    index.rewound = rewind();
    return index;
  }

  // Back to the first frame; the next decode() numbers frames from 0 again. False when the file
  // cannot seek (then open a new VideoDecoder instead).
  bool rewind() {
    const bool ok = seek_keyframe(std::numeric_limits<std::int64_t>::min());
    sequential_ = true;
    next_index_ = 0;
    return ok;
  }

  // Moves to the last keyframe at or before `pts` (FFmpeg's AVSEEK_FLAG_BACKWARD) and drops what
  // the decoder held; frames decoded afterwards carry index -1. Returns false if seeking failed.
  bool seek_keyframe(std::int64_t pts) {
    const std::int64_t target = pts == std::numeric_limits<std::int64_t>::min() ? info_.start_pts : pts;
    const int r = av_seek_frame(format_.get(), info_.stream_index, target, AVSEEK_FLAG_BACKWARD);
    avcodec_flush_buffers(codec_.get());
    sequential_ = false;
    at_end_ = false;
    last_pts_ = target;
    return r >= 0;
  }

  bool at_end() const { return at_end_; }

 private:
  void open(const VideoDecoderOptions& options) {
    const auto& p = info_.path;
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) fail("video file {}: no such file", p.string());
    if (std::filesystem::is_directory(p, ec)) fail("video file {}: is a directory, not a video", p.string());
    const auto size = std::filesystem::file_size(p, ec);
    if (!ec && size == 0) fail("video file {}: empty file (0 bytes)", p.string());

    AVFormatContext* raw = nullptr;
    (void)ffmpeg_said();  // (an earlier file's message is not this one's)
    int r = avformat_open_input(&raw, p.c_str(), nullptr, nullptr);
    if (r < 0) fail("video file {}: not a readable video ({}{})", p.string(), av_error_string(r), ffmpeg_said());
    format_.reset(raw);
    r = avformat_find_stream_info(format_.get(), nullptr);
    if (r < 0)
      fail("video file {}: cannot read stream information ({}{})", p.string(), av_error_string(r), ffmpeg_said());

    const AVCodec* codec = nullptr;
    r = av_find_best_stream(format_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (r < 0) {
      std::string streams;
      for (unsigned i = 0; i < format_->nb_streams; ++i) {
        const auto* par = format_->streams[i]->codecpar;
        const char* type = av_get_media_type_string(par->codec_type);
        streams += fmt::format("{}{} {}", i ? ", " : "", type ? type : "unknown", avcodec_get_name(par->codec_id));
      }
      if (r == AVERROR_DECODER_NOT_FOUND)
        fail("video file {}: no decoder for its video stream ({})", p.string(), streams);
      fail("video file {}: no video stream (streams: {})", p.string(), streams.empty() ? "none" : streams);
    }
    info_.stream_index = r;
    AVStream* stream = format_->streams[r];
    // Cover art (an attached picture) is not a video.
    if (stream->disposition & AV_DISPOSITION_ATTACHED_PIC)
      fail("video file {}: only an attached picture, no video stream", p.string());

    codec_.reset(avcodec_alloc_context3(codec));
    if (!codec_) fail("video file {}: out of memory allocating the decoder", p.string());
    r = avcodec_parameters_to_context(codec_.get(), stream->codecpar);
    if (r < 0) fail("video file {}: bad codec parameters ({}{})", p.string(), av_error_string(r), ffmpeg_said());
    codec_->thread_count = options.threads;
    codec_->thread_type = FF_THREAD_FRAME;
    codec_->pkt_timebase = stream->time_base;
    if (options.skip_loop_filter) codec_->skip_loop_filter = AVDISCARD_ALL;
    r = avcodec_open2(codec_.get(), codec, nullptr);
    if (r < 0)
      fail("video file {}: cannot open the {} decoder ({}{})", p.string(), codec->name, av_error_string(r),
           ffmpeg_said());

    info_.codec_name = codec->name;
    info_.width = stream->codecpar->width;
    info_.height = stream->codecpar->height;
    if (info_.width <= 0 || info_.height <= 0)
      fail("video file {}: video stream has no frame size ({}x{})", p.string(), info_.width, info_.height);
    info_.time_base_num = stream->time_base.num;
    info_.time_base_den = stream->time_base.den;
    info_.start_pts = stream->start_time != AV_NOPTS_VALUE ? stream->start_time : 0;
    if (stream->duration != AV_NOPTS_VALUE && stream->duration > 0)
      info_.duration = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
    else if (format_->duration != AV_NOPTS_VALUE && format_->duration > 0)
      info_.duration = static_cast<double>(format_->duration) / AV_TIME_BASE;
    AVRational rate =
        stream->avg_frame_rate.den && stream->avg_frame_rate.num ? stream->avg_frame_rate : stream->r_frame_rate;
    info_.avg_fps = rate.den && rate.num ? av_q2d(rate) : 0.0;
    info_.reported_frame_count = stream->nb_frames;
    last_pts_ = info_.start_pts - default_step();

    frame_.reset(av_frame_alloc());
    packet_.reset(av_packet_alloc());
    if (!frame_ || !packet_) fail("video file {}: out of memory allocating frames", p.string());
  }

  std::int64_t default_step() const {  // pts ticks per frame at the stated rate, for frames without pts
    if (info_.avg_fps <= 0 || info_.time_base_num <= 0) return 1;
    return std::max<std::int64_t>(1, std::llround(1.0 / (info_.avg_fps * info_.time_base())));
  }

  void mark_damage(DecodeStatus& status, int code, std::int64_t offset = -1) const {
    if (status.damaged) return;
    status.damaged = true;
    status.problem = av_error_string(code) + ffmpeg_said();
    status.byte_offset = offset >= 0 ? offset : (format_->pb ? avio_tell(format_->pb) : -1);
  }

  StreamInfo info_;
  FormatContextPtr format_;
  CodecContextPtr codec_;
  FramePtr frame_;
  PacketPtr packet_;
  bool sequential_ = true;
  bool at_end_ = false;
  std::int64_t next_index_ = 0;
  std::int64_t last_pts_ = 0;
};

// Converts decoded frames to interleaved RGB at a requested size with swscale, reusing the scaler
// while the source format and size stay the same.
class RgbConverter {
 public:
  explicit RgbConverter(int flags = SWS_BICUBIC) : flags_(flags) {}

  // Writes width*height*3 bytes to `out`.
  void convert(const AVFrame& frame, int width, int height, std::uint8_t* out) {
    SwsContext* ctx =
        sws_getCachedContext(sws_.release(), frame.width, frame.height, static_cast<AVPixelFormat>(frame.format), width,
                             height, AV_PIX_FMT_RGB24, flags_, nullptr, nullptr, nullptr);
    sws_.reset(ctx);
    if (!ctx)
      fail("swscale cannot convert {}x{} {} to {}x{} RGB", frame.width, frame.height,
           av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame.format)), width, height);
    std::uint8_t* dst[4] = {out, nullptr, nullptr, nullptr};
    int dst_stride[4] = {width * 3, 0, 0, 0};
    sws_scale(ctx, frame.data, frame.linesize, 0, frame.height, dst, dst_stride);
  }

  RgbImage convert(const AVFrame& frame, int width, int height) {
    RgbImage image{width, height, std::vector<std::uint8_t>(static_cast<std::size_t>(width) * height * 3)};
    convert(frame, width, height, image.data.data());
    return image;
  }

 private:
  int flags_;
  SwsContextPtr sws_;
};

// Every frame of a file in order, as RGB at width x height (0 = the video's own size). For tests
// and small clips; the samplers never hold a whole video.
inline std::vector<SampledFrame> decode_all_frames(const std::filesystem::path& path, int width = 0, int height = 0,
                                                   DecodeStatus* status = nullptr) {
  VideoDecoder decoder(path);
  const int w = width > 0 ? width : decoder.info().width;
  const int h = height > 0 ? height : decoder.info().height;
  RgbConverter converter;
  std::vector<SampledFrame> frames;
  const DecodeStatus s = decoder.decode([&](const DecodedFrame& f) {
    frames.push_back({f.index, f.timestamp, converter.convert(*f.frame, w, h)});
    return true;
  });
  if (status) *status = s;
  return frames;
}

}  // namespace vidlora::video
