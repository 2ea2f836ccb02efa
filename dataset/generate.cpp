#include "dataset/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <tbb/task_group.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <unistd.h>

#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/hashing.h"
#include "core/json.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/stop_signals.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "dataset/plan.h"
#include "formats/dataset_folder.h"
#include "formats/identity_file.h"
#include "dataset/id_filter.h"
#include "dataset/identity_sampler.h"
#include "formats/shard_file.h"

namespace idsynth::dataset {

using generator::Arc2FaceModelPaths;
using generator::Arc2FacePipeline;
using generator::PipelineOptions;
using generator::SampleOptions;
namespace {

namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "unet/config.json" for <model.dir>/unet/config.json: names that do not depend on where the
// model lives, so the same weights give the same shard bytes from any folder.
std::string model_file_name(const std::string& path, const std::vector<std::string>& roots) {
  for (const auto& root : roots) {
    if (root.empty()) continue;
    const fs::path rel = fs::path(path).lexically_normal().lexically_relative(fs::path(root).lexically_normal());
    if (!rel.empty() && rel.native().rfind("..", 0) != 0) return rel.generic_string();
  }
  return fs::path(path).filename().string();
}

std::string model_files_json(const GenerateConfig& cfg, const Arc2FaceModelPaths& paths) {
  json::Value j = json::Value::object();
  const std::vector<std::string> roots = {cfg.model.dir, cfg.model.base_dir};
  for (const auto& f : paths.files()) j.set(model_file_name(f, roots), sha256_file(f));
  if (!cfg.model.recognizer.empty()) j.set("recognizer:" + fs::path(cfg.model.recognizer).filename().string(),
                                           sha256_file(cfg.model.recognizer));
  for (const auto& text : cfg.model.loras) {
    const generator::LoraSpec lora = generator::parse_lora_spec(text);
    j.set("lora:" + fs::path(lora.path).filename().string(), sha256_file(lora.path));
  }
  if (cfg.filter.alignment == "detect")
    j.set("detector:" + fs::path(cfg.model.detector).filename().string(), sha256_file(cfg.model.detector));
  return j.dump();
}

// Returns the LoRA files, read and checked once for every pipeline.
std::vector<generator::LoraToApply> check_files(const GenerateConfig& cfg) {
  IDSYNTH_CHECK(cfg.model.recognizer.empty() || file_exists(cfg.model.recognizer), "model.recognizer: file not found: '",
                cfg.model.recognizer, "'");
  std::vector<generator::LoraToApply> loras;
  for (const auto& text : cfg.model.loras) {
    const generator::LoraSpec lora = generator::parse_lora_spec(text);
    IDSYNTH_CHECK(file_exists(lora.path), "model.loras: file not found: '", lora.path, "'");
    loras.push_back({generator::read_lora(lora.path), lora.scale});  // its form, pairs and values, before any output
  }
  IDSYNTH_CHECK(cfg.model.detector.empty() || file_exists(cfg.model.detector), "model.detector: file not found: '",
                cfg.model.detector, "'");
  IDSYNTH_CHECK(cfg.identities.from_file.empty() || file_exists(cfg.identities.from_file),
                "identities.from_file: file not found: '", cfg.identities.from_file, "'");
  IDSYNTH_CHECK(!cfg.output.dir.empty(), "output.dir: expected a folder, found an empty string");
  IDSYNTH_CHECK(cfg.output.store_full_image || cfg.output.store_aligned_crop,
                "output: store_full_image and store_aligned_crop are both false: a shard would hold no image");
  return loras;
}

// An existing dataset in output.dir must come from the same config (placement fields aside).
void check_existing_dataset(const GenerateConfig& cfg) {
  const std::string path = (fs::path(cfg.output.dir) / "config.resolved.yaml").string();
  if (!file_exists(path)) return;
  const auto old = config::load<GenerateConfig>(path);
  IDSYNTH_CHECK(dataset_config_yaml(old) == dataset_config_yaml(cfg), cfg.output.dir,
                ": holds a dataset made with a different config (", path,
                "); resume with the same config or choose another output.dir");
}

// Identities: ids [count, dim] float32 from a file, normalised; first `count` rows.
at::Tensor identities_from_file(const GenerateConfig& cfg) {
  const std::string& path = cfg.identities.from_file;
  const at::Tensor t = formats::read_identity_vectors(path);
  IDSYNTH_CHECK(t.size(0) >= cfg.identities.count && t.size(1) == cfg.identities.dim, path,
                ": identities.from_file: expected [>= ", cfg.identities.count, ", ", cfg.identities.dim,
                "] (identities.count, dim), found ", t.sizes());
  return t.narrow(0, 0, cfg.identities.count).contiguous();
}

// Thrown inside a worker when a stop signal arrived: the shard being generated is dropped.
struct Interrupted {};

// ---- one shard ----------------------------------------------------------------------------

struct SlotState {
  bool done = false;
  int32_t attempt = -1;
  uint64_t seed = 0;
  float similarity = std::numeric_limits<float>::quiet_NaN();
  std::string full, aligned;
};

struct Shared {
  const GenerateConfig* cfg = nullptr;
  at::Tensor ids;  // [n, D] float32 CPU
  std::string config_yaml, model_files;
  std::vector<ShardPlan> queue;
  std::atomic<size_t> next{0};
  std::atomic<int64_t> written{0};
  std::atomic<bool> stop{false};    // take no new shard (max_shards reached or an error)
  std::atomic<bool> failed{false};  // a worker failed: abandon the current shard too
  std::atomic<int64_t> kept{0}, drawn{0};
  int64_t max_shards = 0;
  Progress* progress = nullptr;
  std::mutex error_mutex;
  std::exception_ptr error;

  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = e;
    failed = true;
    stop = true;
  }
};

class Worker {
 public:
  Worker(Shared& shared, std::unique_ptr<Arc2FacePipeline> pipeline, std::unique_ptr<IdFilter> filter, c10::Device device)
      : s_(shared), pipeline_(std::move(pipeline)), filter_(std::move(filter)) {
    stats_.device = device.str();
  }

  void run() {
    at::init_num_threads();
    const auto t0 = std::chrono::steady_clock::now();
    tbb::task_group writer;
    bool writing = false;
    try {
      while (!s_.stop && stop_signal() == 0) {
        const size_t i = s_.next.fetch_add(1);
        if (i >= s_.queue.size()) break;
        formats::ShardData data = generate_shard(s_.queue[i]);
        formats::ShardRecord record = make_record(s_.queue[i], data);
        // At most one shard waits for the disk per worker; the next shard's UNet batches run meanwhile.
        if (writing) writer.wait();
        writing = true;
        auto job = std::make_shared<std::pair<formats::ShardData, formats::ShardRecord>>(std::move(data), std::move(record));
        writer.run([this, job] { write(job->first, job->second); });
        ++stats_.shards;
        if (s_.max_shards > 0 && s_.written.fetch_add(1) + 1 >= s_.max_shards) s_.stop = true;
      }
      stats_.seconds = seconds_since(t0);
      if (writing) writer.wait();
    } catch (const Interrupted&) {
      // The shard being generated is dropped; the one being written is finished, with its record.
      stats_.seconds = seconds_since(t0);
      s_.stop = true;
      try {
        writer.wait();
      } catch (...) {
        s_.fail(std::current_exception());
      }
    } catch (...) {
      try {
        writer.wait();
      } catch (...) {
      }
      s_.fail(std::current_exception());
    }
  }

  const WorkerStats& stats() const { return stats_; }

 private:
  formats::ShardData generate_shard(const ShardPlan& shard) {
    const GenerateConfig& cfg = *s_.cfg;
    const auto slots = shard_slots(shard, cfg.output.images_per_identity);
    std::vector<SlotState> state(slots.size());
    shard_draws_ = 0;
    shard_no_face_ = 0;
    shard_wrong_identity_ = 0;
    const at::Tensor shard_ids = s_.ids.narrow(0, shard.first_identity, shard.identity_count);
    at::Tensor cond_ids;  // [K, 77, H] on the device, once per shard
    {
      torch::NoGradGuard no_grad;
      cond_ids = pipeline_->encode_ids(shard_ids);
    }
    SampleOptions sample;
    sample.num_inference_steps = cfg.generation.steps;
    sample.guidance_scale = cfg.generation.guidance;
    sample.batch_size = 0;  // the batch plan below is the batching

    std::vector<size_t> pending(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) pending[i] = i;
    tbb::task_group filters;
    for (int64_t attempt = 0; attempt < cfg.filter.max_attempts && !pending.empty(); ++attempt) {
      for (const auto& [begin, end] : batch_ranges(pending.size(), cfg.generation.batch_size)) {
        if (s_.failed) throw Error("generation stopped: another worker failed");
        if (stop_signal() != 0) throw Interrupted{};
        std::vector<size_t> batch(pending.begin() + static_cast<std::ptrdiff_t>(begin),
                                  pending.begin() + static_cast<std::ptrdiff_t>(end));
        std::vector<at::Tensor> latents;
        // Each image's own generator draws its latent and then, for a scheduler that adds noise
        // between steps (LCM), its per-step noise: an image's numbers depend only on its seed, so
        // shards are the same bytes for any batch size, worker count or resume.
        std::vector<at::Generator> generators;
        std::vector<int64_t> local;
        for (size_t idx : batch) {
          const ImageSlot& slot = slots[idx];
          state[idx].seed = image_seed(static_cast<uint64_t>(cfg.generation.seed), slot.identity, slot.image, attempt);
          generators.push_back(at::detail::createCPUGenerator(state[idx].seed));
          latents.push_back(pipeline_->draw_latents(generators.back(), 1, cfg.generation.height, cfg.generation.width));
          local.push_back(slot.local);
        }
        const auto index = torch::tensor(local, torch::kLong);
        const at::Tensor cond = cond_ids.index_select(0, index.to(cond_ids.device()));
        const at::Tensor vectors = shard_ids.index_select(0, index);
        const auto u0 = std::chrono::steady_clock::now();
        at::Tensor images = Arc2FacePipeline::to_uint8(pipeline_->sample_embeds(cond, torch::cat(latents), sample, nullptr, generators));
        stats_.unet_seconds += seconds_since(u0);
        stats_.draws += static_cast<int64_t>(batch.size());
        shard_draws_ += static_cast<int64_t>(batch.size());
        s_.drawn += static_cast<int64_t>(batch.size());
        filters.run([this, images, vectors, batch, attempt, &state] {
          const auto results = filter_->process(images, vectors);
          int64_t kept = 0;
          for (size_t j = 0; j < batch.size(); ++j) {
            SlotState& st = state[batch[j]];
            st.similarity = results[j].similarity;
            st.attempt = static_cast<int32_t>(attempt);
            if (!results[j].accepted) {
              ++(results[j].face_found ? shard_wrong_identity_ : shard_no_face_);
              continue;
            }
            st.done = true;
            st.full = std::move(results[j].full_jpeg);
            st.aligned = std::move(results[j].aligned_jpeg);
            ++kept;
          }
          s_.kept += kept;
          if (s_.progress != nullptr) {
            s_.progress->advance(kept);
            const double ratio = static_cast<double>(s_.kept.load()) / static_cast<double>(std::max<int64_t>(1, s_.drawn.load()));
            s_.progress->set_note(cat("accepted ", std::lround(100.0 * ratio), "%"));
          }
        });
      }
      filters.wait();
      pending.clear();
      for (size_t i = 0; i < slots.size(); ++i)
        if (!state[i].done) pending.push_back(i);
    }

    formats::ShardData d;
    d.shard_index = shard.index;
    d.config = s_.config_yaml;
    d.model_files = s_.model_files;
    d.dim = shard_ids.size(1);
    const at::Tensor v = shard_ids.contiguous();
    d.identity_vectors.assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    d.has_images = cfg.output.store_full_image;
    d.has_aligned = cfg.output.store_aligned_crop;
    for (int64_t i = 0; i < shard.identity_count; ++i) d.identity_index.push_back(shard.first_identity + i);
    int64_t last_short = -1;
    for (size_t i = 0; i < slots.size(); ++i) {
      SlotState& st = state[i];
      if (!st.done) {
        if (slots[i].identity != last_short) d.short_identities.push_back(slots[i].identity);
        last_short = slots[i].identity;
        continue;
      }
      d.labels.push_back(slots[i].identity);
      d.image_index.push_back(static_cast<int32_t>(slots[i].image));
      d.attempt.push_back(st.attempt);
      d.seed.push_back(st.seed);
      d.similarity.push_back(st.similarity);
      if (d.has_images) d.images.push_back(std::move(st.full));
      if (d.has_aligned) d.aligned.push_back(std::move(st.aligned));
    }
    stats_.images += static_cast<int64_t>(d.size());
    return d;
  }

  formats::ShardRecord make_record(const ShardPlan& shard, const formats::ShardData& d) {
    formats::ShardRecord r;
    r.index = shard.index;
    r.file = formats::shard_stem(shard.index) + ".h5";
    r.first_identity = shard.first_identity;
    r.identities = shard.identity_count;
    r.images = static_cast<int64_t>(d.size());
    r.draws = shard_draws_;
    r.rejected_no_face = shard_no_face_.load();
    r.rejected_identity = shard_wrong_identity_.load();
    IDSYNTH_CHECK(r.images + *r.rejected_no_face + *r.rejected_identity == r.draws, r.file, ": ", r.images, " kept + ",
                  *r.rejected_no_face, " without a face + ", *r.rejected_identity, " of the wrong identity: expected ",
                  r.draws, " draws");
    r.short_identities = d.short_identities;
    stats_.rejected_no_face += *r.rejected_no_face;
    stats_.rejected_identity += *r.rejected_identity;
    return r;
  }

  void write(const formats::ShardData& d, formats::ShardRecord r) {
    const std::string& out = s_.cfg->output.dir;
    const std::string h5 = formats::shard_h5_path(out, r.index);
    // Temporaries of this shard left by a killed process: only the task owning the shard writes it.
    const std::string stem = formats::shard_stem(r.index);
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(formats::shards_dir(out))) {
      const std::string name = e.path().filename().string();
      if (name.rfind(stem + ".h5.tmp.", 0) == 0 || name.rfind(stem + ".json.tmp.", 0) == 0) stale.push_back(e.path());
    }
    for (const auto& p : stale) fs::remove(p);
    formats::write_shard(h5, d);
    r.size = file_size(h5);
    r.sha256 = sha256_file(h5);
    formats::write_record(out, r);
  }

  Shared& s_;
  std::unique_ptr<Arc2FacePipeline> pipeline_;
  std::unique_ptr<IdFilter> filter_;
  WorkerStats stats_;
  int64_t shard_draws_ = 0;
  // Filter tasks of one shard run side by side and all count here.
  std::atomic<int64_t> shard_no_face_{0}, shard_wrong_identity_{0};
};

}  // namespace

std::string dataset_config_yaml(const GenerateConfig& cfg) {
  GenerateConfig c = cfg;
  c.output.dir = "";
  c.generation.devices = {};
  c.generation.threads = 0;
  // Placement too: in float32 on the CPU a face's bytes do not depend on the batch it was drawn in
  // (core/invariant_kernels.h); on GPUs, as across device types, rounding may differ.
  c.generation.batch_size = 0;
  std::string yaml = config::to_yaml(c, false);
  // Keys added after datasets whose shards store this text are left out where they change nothing
  // (filter.det_size without detection or at insightface's 640 that was fixed before; model.variant
  // empty, the plain files, which the model-file hashes name anyway), so those configs still give
  // the same bytes and resume. The emitter writes a section's keys two spaces in; each of these
  // names is unique in the schema.
  auto drop = [&yaml](const std::string& line) {
    const size_t at = yaml.find("\n  " + line + "\n");
    IDSYNTH_CHECK(at != std::string::npos, "dataset config: expected the line '", line, "', found none");
    yaml.erase(at + 1, line.size() + 3);
  };
  if (c.filter.alignment != "detect" || c.filter.det_size == FilterConfig{}.det_size)
    drop(cat("det_size: ", c.filter.det_size));
  if (c.model.variant.empty()) drop("variant: \"\"");
  if (c.model.loras.empty()) drop("loras: []");
  if (c.generation.timestep_spacing.empty()) drop("timestep_spacing: \"\"");
  return yaml;
}

int64_t dataset_shard_count(const GenerateConfig& cfg) {
  return static_cast<int64_t>(plan_shards(cfg.identities.count, cfg.output.identities_per_shard).size());
}

at::Tensor load_or_make_identities(const GenerateConfig& cfg, std::string* report) {
  const fs::path out(cfg.output.dir);
  const std::string path = (out / "identities.safetensors").string();
  if (file_exists(path)) {
    const at::Tensor ids = formats::read_vector_rows(path);
    IDSYNTH_CHECK(ids.dim() == 2 && ids.size(0) == cfg.identities.count && ids.size(1) == cfg.identities.dim, path,
                  ": ids: expected [", cfg.identities.count, ", ", cfg.identities.dim, "] (identities.count, dim), found ",
                  ids.sizes());
    if (report != nullptr) *report = cat("identities: ", ids.size(0), " read from ", path, "\n");
    return ids;
  }
  at::Tensor ids;
  json::Value j = json::Value::object();
  std::string text;
  if (!cfg.identities.from_file.empty()) {
    ids = identities_from_file(cfg);
    j.set("source", cfg.identities.from_file);
    text = cat("identities: ", ids.size(0), " taken from ", cfg.identities.from_file, "\n");
  } else {
    IdentitySamplerOptions o;
    o.count = cfg.identities.count;
    o.dim = cfg.identities.dim;
    o.max_similarity = cfg.identities.max_similarity;
    o.seed = static_cast<uint64_t>(cfg.identities.seed);
    if (!cfg.identities.like.empty()) o.like = formats::read_vector_rows(cfg.identities.like, "identities.like");
    if (!cfg.identities.gallery.empty()) {
      o.gallery = formats::read_vector_rows(cfg.identities.gallery, "identities.gallery");
      o.max_gallery_similarity = cfg.identities.max_gallery_similarity;
    }
    const IdentitySample sample = sample_identities(o);
    ids = sample.ids;
    j.set("source", "sampled");
    j.set("candidates", sample.candidates);
    j.set("acceptance_rate", sample.acceptance_rate);
    j.set("nearest_max", sample.nearest_max);
    j.set("nearest_mean", sample.nearest_mean);
    json::Value h = json::Value::array();
    for (int64_t c : sample.nearest_histogram) h.push_back(json::Value(c));
    j.set("nearest_histogram_bins_over_minus1_1", h);
    text = describe(sample);
  }
  j.set("count", cfg.identities.count);
  j.set("dim", cfg.identities.dim);
  j.set("max_similarity", cfg.identities.max_similarity);
  j.set("seed", cfg.identities.seed);
  // Concurrent array tasks compute the same vectors; each writes whole files under a temporary name.
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  save_safetensors(tmp, {{"ids", ids.contiguous()}}, {{"format", "pt"}});
  fs::rename(tmp, path);
  write_file_atomic((out / "identities.json").string(), j.dump(2) + "\n");
  if (report != nullptr) *report = text;
  return ids;
}

GenerateSummary generate_dataset(const GenerateConfig& cfg, const GenerateOptions& options) {
  GenerateSummary summary;
  const StopSignals signals(options.handle_signals);
  const auto t_load = std::chrono::steady_clock::now();
  // 1. Everything that can be wrong is checked before any output is written.
  const std::vector<generator::LoraToApply> lora_files = check_files(cfg);
  Arc2FaceModelPaths paths;
  try {
    paths = Arc2FaceModelPaths::resolve(cfg.model.dir, cfg.model.base_dir, cfg.model.variant);
  } catch (const Error& e) {
    fail("model.dir: ", e.what());
  }
  {
    // The scheduler's own step range (LCM: 1..original_inference_steps), before any output.
    const auto schedule = Arc2FacePipeline::scheduler_for(paths, cfg.generation.scheduler, cfg.generation.timestep_spacing);
    try {
      schedule->set_timesteps(cfg.generation.steps);
    } catch (const Error& e) {
      fail("generation.steps: ", e.what());
    }
  }
  const std::vector<c10::Device> devices = resolve_devices(cfg.generation.devices, "generation.devices");
  const c10::ScalarType dtype = runtime_dtype(parse_dtype(cfg.generation.dtype, "generation.dtype"), devices.front(), "generation.dtype");
  check_existing_dataset(cfg);
  // One process per task: a second run on the same task (a double submit) refuses before it loads
  // any model when the folder exists, or once it has created it (step 2).
  std::optional<formats::TaskLock> lock;
  if (is_directory(cfg.output.dir)) lock.emplace(cfg.output.dir, options.task_index, options.task_count);
  const auto all_shards = plan_shards(cfg.identities.count, cfg.output.identities_per_shard);
  const auto task_shards = shards_for_task(all_shards, options.task_index, options.task_count);
  summary.shards_total = static_cast<int64_t>(all_shards.size());
  summary.shards_of_task = static_cast<int64_t>(task_shards.size());
  if (cfg.generation.threads > 0) configure_threads(static_cast<int>(cfg.generation.threads));

  Shared shared;
  shared.cfg = &cfg;
  shared.max_shards = options.max_shards;
  for (const auto& s : task_shards) {
    if (formats::shard_finished(cfg.output.dir, s.index)) ++summary.shards_skipped;
    else shared.queue.push_back(s);
  }
  const size_t n_workers = std::min(devices.size(), std::max<size_t>(1, shared.queue.size()));
  std::vector<std::unique_ptr<Arc2FacePipeline>> pipelines;
  std::vector<std::unique_ptr<IdFilter>> filters;
  if (!shared.queue.empty()) {
    for (size_t w = 0; w < n_workers; ++w) {
      PipelineOptions po;
      po.device = devices[w];
      po.dtype = dtype;
      po.scheduler = cfg.generation.scheduler;
      po.timestep_spacing = cfg.generation.timestep_spacing;
      for (const auto& text : cfg.model.loras) po.loras.push_back(generator::parse_lora_spec(text));
      po.lora_files = lora_files;
      pipelines.push_back(std::make_unique<Arc2FacePipeline>(Arc2FacePipeline::load(paths, po)));
      const int64_t f = pipelines.back()->vae_scale_factor();
      IDSYNTH_CHECK(cfg.generation.height % f == 0 && cfg.generation.width % f == 0, "generation.height/width: expected multiples of ",
                    f, " (the VAE scale factor), found ", cfg.generation.height, "x", cfg.generation.width);
      IDSYNTH_CHECK(cfg.identities.dim <= pipelines.back()->id_width(), "identities.dim: expected <= ",
                    pipelines.back()->id_width(), " (the text encoder's hidden_size in ", cfg.model.dir, "), found ",
                    cfg.identities.dim);
      IdFilterOptions fo;
      fo.recognizer = cfg.model.recognizer;
      fo.detector = cfg.model.detector;
      fo.alignment = cfg.filter.alignment;
      fo.det_size = static_cast<int>(cfg.filter.det_size);
      fo.min_similarity = cfg.filter.min_similarity;
      fo.jpeg_quality = static_cast<int>(cfg.output.jpeg_quality);
      fo.store_full_image = cfg.output.store_full_image;
      fo.store_aligned_crop = cfg.output.store_aligned_crop;
      fo.device = devices[w];
      fo.identity_dim = cfg.identities.dim;
      filters.push_back(std::make_unique<IdFilter>(fo));
    }
  }

  // 2. Output folder, resolved config, identities (once per dataset), model hashes.
  {
    std::error_code ec;
    fs::create_directories(formats::shards_dir(cfg.output.dir), ec);
    IDSYNTH_CHECK(!ec, formats::shards_dir(cfg.output.dir), ": output.dir: cannot create the folder (", ec.message(), ")");
  }
  if (!lock) lock.emplace(cfg.output.dir, options.task_index, options.task_count);
  if (!lock->stale_holder().empty())
    LOG_WRN(lock->path(), ": left by a run that ended without releasing it (", lock->stale_holder(),
            ", killed or crashed); taking it over");
  config::write_resolved(cfg, (fs::path(cfg.output.dir) / "config.resolved.yaml").string());
  LOG_INF("generate config:\n", config::to_yaml(cfg));
  std::string id_report;
  shared.ids = load_or_make_identities(cfg, &id_report);
  if (!id_report.empty()) LOG_INF(id_report);
  shared.config_yaml = dataset_config_yaml(cfg);
  if (!shared.queue.empty()) shared.model_files = model_files_json(cfg, paths);
  summary.load_seconds = seconds_since(t_load);
  LOG_INF("generate: ", summary.shards_total, " shards in the dataset, ", summary.shards_of_task, " for task ",
          options.task_index, "/", options.task_count, ", ", summary.shards_skipped, " already finished, ",
          shared.queue.size(), " to generate on ", n_workers, " worker(s)");

  // 3. Workers pull shards from the queue.
  const auto t0 = std::chrono::steady_clock::now();
  if (!shared.queue.empty()) {
    int64_t planned = 0;
    for (const auto& s : shared.queue) planned += s.identity_count * cfg.output.images_per_identity;
    Progress progress(planned, "generate", "img");
    if (options.progress) shared.progress = &progress;
    std::vector<std::unique_ptr<Worker>> workers;
    for (size_t w = 0; w < n_workers; ++w)
      workers.push_back(std::make_unique<Worker>(shared, std::move(pipelines[w]), std::move(filters[w]), devices[w]));
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    for (auto& t : threads) t.join();
    if (options.progress) progress.finish();
    for (const auto& w : workers) {
      summary.workers.push_back(w->stats());
      summary.shards_generated += w->stats().shards;
      summary.images += w->stats().images;
      summary.draws += w->stats().draws;
      summary.rejected_no_face += w->stats().rejected_no_face;
      summary.rejected_identity += w->stats().rejected_identity;
    }
    if (shared.error) std::rethrow_exception(shared.error);
  }
  summary.seconds = seconds_since(t0);
  // A signal that came after this task's last shard interrupted nothing.
  if (summary.shards_skipped + summary.shards_generated < summary.shards_of_task) summary.interrupted = stop_signal();

  // 4. The manifest, rebuilt from every record on disk (other array tasks' included).
  summary.shards_finished = formats::rebuild_manifest(cfg.output.dir, summary.shards_total);
  for (const auto& s : task_shards) {
    formats::ShardRecord r;
    if (formats::read_record(cfg.output.dir, s.index, &r)) summary.short_identities += static_cast<int64_t>(r.short_identities.size());
  }
  return summary;
}

double GenerateSummary::unet_busy() const {
  double busy = 0.0, total = 0.0;
  for (const auto& w : workers) {
    busy += w.unet_seconds;
    total += w.seconds;
  }
  return total > 0.0 ? busy / total : 0.0;
}

std::string describe(const GenerateSummary& s) {
  std::string out = cat("generated ", s.shards_generated, " shards (", s.images, " images kept of ", s.draws, " drawn");
  if (s.draws > 0) out += cat(", accepted ", std::lround(100.0 * s.images / s.draws), "%");
  if (s.draws > s.images)
    out += cat("; rejected ", s.rejected_no_face, " without a face, ", s.rejected_identity, " of the wrong identity");
  out += cat(") in ", Progress::format_duration(s.seconds));
  if (s.seconds > 0.0 && s.draws > 0) out += cat(", ", s.draws / s.seconds, " images/s drawn");
  out += cat("; UNet busy ", std::lround(100.0 * s.unet_busy()), "%\n");
  for (const auto& w : s.workers)
    out += cat("  worker ", w.device, ": ", w.shards, " shards, ", w.draws, " images drawn, UNet ",
               Progress::format_duration(w.unet_seconds), " of ", Progress::format_duration(w.seconds), "\n");
  if (s.interrupted != 0)
    out += cat("interrupted by ", s.interrupted == SIGTERM ? "SIGTERM" : s.interrupted == SIGINT ? "SIGINT" : "a signal",
               ": the shard in flight was dropped, finished shards and their records are kept\n");
  out += cat("dataset: ", s.shards_finished, " of ", s.shards_total, " shards finished",
             s.complete() ? "" : " (rerun the same command, or the other array tasks, to finish)", "; ", s.short_identities,
             " short identities in this task's shards\n");
  return out;
}

}  // namespace idsynth::dataset
