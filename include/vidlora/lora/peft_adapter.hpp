#pragma once
// LoRA adapters in PEFT's on-disk format: a directory with `adapter_config.json` (LoraConfig's
// fields, as PEFT 0.21 writes them: sorted keys, 2-space indent) and `adapter_model.safetensors`
// holding `base_model.model.<module path>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r]
// (float32, metadata {"format": "pt"}), and, for the modules named by `modules_to_save` (whole modules
// trained beside LoRA: a LLaVA fine-tune's multi_modal_projector), their tensors under
// `base_model.model.<module path>.<tensor>`. Both files are written atomically.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/atomic_file.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/lora/peft_targets.hpp>
#include <vidlora/lora/target_modules.hpp>

namespace vidlora::lora {

inline constexpr std::string_view kAdapterConfigName = "adapter_config.json";
inline constexpr std::string_view kAdapterWeightsName = "adapter_model.safetensors";
inline constexpr std::string_view kPeftKeyPrefix = "base_model.model.";
// The PEFT release whose adapter_config.json layout save_peft_adapter reproduces.
inline constexpr std::string_view kPeftFormatVersion = "0.21.2";

// Every field of PEFT 0.21.2's LoraConfig, its PeftConfig base's included (dataclasses.fields; checked against
// tools/reference/peft_config_fields.py's fixture). adapter_config.json may hold only these, or another field
// whose value is null, false or empty: what every feature flag and sub-config of that release is when off. PEFT
// itself drops a field it does not know with a warning; vidlora refuses one that is set, since a newer PEFT's
// option may change what the adapter computes.
inline constexpr std::string_view kLoraConfigFields =
    "task_type peft_type auto_mapping peft_version base_model_name_or_path revision inference_mode r "
    "target_modules exclude_modules lora_alpha lora_dropout fan_in_fan_out bias use_rslora modules_to_save "
    "init_lora_weights layers_to_transform layers_pattern rank_pattern alpha_pattern megatron_config "
    "megatron_core trainable_token_indices loftq_config eva_config corda_config lora_ga_config use_dora "
    "velora_config alora_invocation_tokens use_qalora qalora_group_size monteclora_config layer_replication "
    "runtime_config lora_bias target_parameters use_bdlora arrow_config kasa_config ensure_weight_tying";

// Whether `key` is one of kLoraConfigFields.
constexpr bool lora_config_field(std::string_view key) {
  for (std::string_view rest = kLoraConfigFields; !rest.empty();) {
    const auto space = rest.find(' ');
    if (rest.substr(0, space) == key) return true;
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
  }
  return false;
}

// The adapter_config.json fields vidlora sets; every other LoraConfig field gets PEFT's default.
struct AdapterSpec {
  int r = 16;
  double lora_alpha = 32;
  double lora_dropout = 0.05;
  std::vector<std::string> target_modules;  // names matched by PEFT's rule (equal or ".<name>" suffix)
  std::string base_model_name_or_path;      // "" is written as null
  bool use_rslora = false;
  std::string bias = "none";
  std::string task_type = "CAUSAL_LM";
  // (last and default-initialized, so designated initializers of the fields above stay valid)
  std::optional<std::string> target_regex{};   // target_modules written as one regular expression (full match)
  std::vector<std::string> exclude_modules{};  // list form
  std::optional<std::string> exclude_regex{};  // string form
  std::vector<int> layers_to_transform{};      // list targets only: layer indices that get LoRA
  std::vector<std::string> layers_pattern{};   // the module-list name before the layer index ("layers")
  // Modules trained whole beside LoRA and saved in the adapter file; PEFT's rule: a module whose path ends with
  // an entry ("multi_modal_projector" selects "model.multi_modal_projector").
  std::vector<std::string> modules_to_save{};

  // PEFT's scaling: lora_alpha / r, or lora_alpha / √r with use_rslora.
  double scaling() const { return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / r; }

  // The module selection these fields describe, resolved as PEFT resolves it.
  PeftTargets targets() const {
    PeftTargets t = target_regex ? PeftTargets::regex(*target_regex) : PeftTargets::names(target_modules);
    if (exclude_regex) t.exclude_regex(*exclude_regex);
    if (!exclude_modules.empty()) t.exclude_names(exclude_modules);
    if (!layers_to_transform.empty()) t.layers(layers_to_transform, layers_pattern);
    return t;
  }
};

// One adapted linear layer's LoRA factors, PyTorch layout.
struct AdapterWeights {
  Matrix A;  // [r, in]
  Matrix B;  // [out, r]
};

// Module path ("model.layers.0.self_attn.q_proj") -> its factors.
using AdapterModules = std::map<std::string, AdapterWeights>;

struct PeftAdapter {
  AdapterSpec spec;
  AdapterModules modules;
  // The modules_to_save tensors in the file, without "base_model.model." ("model.multi_modal_projector.linear_1.weight");
  // their values stay in the file (a reader takes those it uses and must refuse the others).
  std::vector<std::string> saved_tensors;
};

// Whether `tensor` ("model.multi_modal_projector.linear_1.weight") belongs to a module that `spec.modules_to_save`
// selects: one of the module paths above it ends with an entry, as PEFT wraps a module whose name does.
inline bool saved_module_tensor(const AdapterSpec& spec, std::string_view tensor) {
  for (auto dot = tensor.find('.'); dot != std::string_view::npos; dot = tensor.find('.', dot + 1)) {
    const std::string_view module = tensor.substr(0, dot);
    for (const auto& entry : spec.modules_to_save)
      if (!entry.empty() && module.ends_with(entry)) return true;
  }
  return false;
}

// "base_model.model.<module path>.lora_A.weight" (factor 'A') or "...lora_B.weight" ('B').
inline std::string peft_key(std::string_view module_path, char factor) {
  return fmt::format("{}{}.lora_{}.weight", kPeftKeyPrefix, module_path, factor);
}

namespace detail {

// PEFT 0.21.2's LoraConfig as save_pretrained writes it, with vidlora's fields filled in.
inline nlohmann::json adapter_config_json(const AdapterSpec& spec) {
  using nlohmann::json;
  std::set<std::string> targets(spec.target_modules.begin(), spec.target_modules.end());
  const auto number = [](double v) {
    return v == std::floor(v) && std::abs(v) < 1e15 ? json(static_cast<long long>(v)) : json(v);
  };
  return json{
      {"alora_invocation_tokens", nullptr},
      {"alpha_pattern", json::object()},
      {"arrow_config", nullptr},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path",
       spec.base_model_name_or_path.empty() ? json(nullptr) : json(spec.base_model_name_or_path)},
      {"bias", spec.bias},
      {"corda_config", nullptr},
      {"ensure_weight_tying", false},
      {"eva_config", nullptr},
      {"exclude_modules", spec.exclude_regex
                              ? json(*spec.exclude_regex)
                              : (spec.exclude_modules.empty() ? json(nullptr) : json(spec.exclude_modules))},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"kasa_config", nullptr},
      {"layer_replication", nullptr},
      {"layers_pattern", spec.layers_pattern.empty() ? json(nullptr) : json(spec.layers_pattern)},
      {"layers_to_transform", spec.layers_to_transform.empty() ? json(nullptr) : json(spec.layers_to_transform)},
      {"loftq_config", json::object()},
      {"lora_alpha", number(spec.lora_alpha)},
      {"lora_bias", false},
      {"lora_dropout", spec.lora_dropout},
      {"lora_ga_config", nullptr},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", spec.modules_to_save.empty() ? json(nullptr) : json(spec.modules_to_save)},
      {"monteclora_config", nullptr},
      {"peft_type", "LORA"},
      {"peft_version", std::string(kPeftFormatVersion)},
      {"qalora_group_size", 16},
      {"r", spec.r},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules",
       spec.target_regex ? json(*spec.target_regex) : json(std::vector<std::string>(targets.begin(), targets.end()))},
      {"target_parameters", nullptr},
      {"task_type", spec.task_type},
      {"trainable_token_indices", nullptr},
      {"use_bdlora", nullptr},
      {"use_dora", false},
      {"use_qalora", false},
      {"use_rslora", spec.use_rslora},
      {"velora_config", nullptr},
  };
}

inline AdapterSpec parse_adapter_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("PEFT adapter: cannot open '{}'", path.string());
  const nlohmann::json c = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (c.is_discarded() || !c.is_object()) fail("PEFT adapter config '{}': not a JSON object", path.string());
  const auto bad = [&](std::string_view problem) {
    return Error(fmt::format("PEFT adapter config '{}': {}", path.string(), problem));
  };
  const auto get = [&](const char* key) -> const nlohmann::json* {
    const auto it = c.find(key);
    return it == c.end() || it->is_null() ? nullptr : &*it;
  };
  const auto* type = get("peft_type");
  if (!type) throw bad("\"peft_type\" is missing (PEFT cannot load it either)");
  if (*type != "LORA") throw bad(fmt::format("peft_type {} is not LORA", type->dump()));
  for (const auto& [key, value] : c.items()) {
    const bool off = value.is_null() || value == false || (value.is_number() && value == 0) ||
                     (value.is_structured() && value.empty()) ||
                     (value.is_string() && value.get_ref<const std::string&>().empty());
    if (!off && !lora_config_field(key))
      throw bad(fmt::format(
          "field \"{}\" = {} is not one of PEFT {}'s LoraConfig, the release vidlora reads (PEFT drops such a field "
          "with a warning): a newer PEFT's option may change what the adapter computes, so it is refused; remove it "
          "from the file if you know it does not",
          key, value.dump(), kPeftFormatVersion));
  }
  // LoraConfig fields that change what the adapter computes and that vidlora does not implement.
  const auto refuse_true = [&](const char* key, std::string_view why) {
    if (const auto* v = get(key); v && *v != false)
      throw bad(fmt::format("{} {} is not supported ({})", key, v->dump(), why));
  };
  refuse_true("use_dora", "DoRA's magnitude vector and weight norm");
  refuse_true("lora_bias", "a trained bias on lora_B");
  refuse_true("use_qalora", "QALoRA's pooled input");
  refuse_true("use_bdlora", "block-diagonal LoRA");
  refuse_true("fan_in_fan_out", "Conv1D-style transposed weights");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (const auto* p = get(key); p && !p->empty())
      throw bad(fmt::format("{} {} is not supported (one rank and alpha for every module)", key, p->dump()));
  for (const char* key :
       {"trainable_token_indices", "target_parameters", "layer_replication", "alora_invocation_tokens", "arrow_config",
        "velora_config", "monteclora_config", "kasa_config"})
    if (const auto* p = get(key); p && !(p->is_array() && p->empty()) && !(p->is_object() && p->empty()))
      throw bad(fmt::format("{} {} is not supported", key, p->dump()));
  // How lora_A / lora_B started: "gaussian", "orthogonal" and "eva" set only them (the adapter is plain LoRA over
  // the base weights); PiSSA, OLoRA, CorDA and LoftQ also rewrite the base weights it was trained against.
  if (const auto* init = get("init_lora_weights"); init && init->is_string()) {
    const std::string how = init->get<std::string>();
    if (how != "gaussian" && how != "orthogonal" && how != "eva")
      throw bad(fmt::format("init_lora_weights {} is not supported ({})", init->dump(),
                            how.starts_with("pissa") || how == "olora" || how == "corda" || how == "loftq"
                                ? "it changes the base weights the adapter was trained against"
                                : "not an initialisation vidlora knows"));
  }
  if (const auto* b = get("bias"); b && *b != "none")
    throw bad(fmt::format("bias {} is not supported (trained biases in the base layers; only \"none\")", b->dump()));

  AdapterSpec spec;
  const auto* r = get("r");
  if (!r || !r->is_number_integer() || r->get<long long>() <= 0)
    throw bad("\"r\" is missing or not a positive integer");
  spec.r = r->get<int>();
  const auto* alpha = get("lora_alpha");
  if (!alpha || !alpha->is_number()) throw bad("\"lora_alpha\" is missing or not a number");
  spec.lora_alpha = alpha->get<double>();
  // (PEFT takes any: 0 makes the adapter add nothing, a negative one subtracts it; LoraOptions::alpha reads 0 as
  // "the template Alpha", so neither would run as trained)
  if (!(spec.lora_alpha > 0.0))
    throw bad(fmt::format("lora_alpha {} is not supported: vidlora takes a positive lora_alpha", alpha->dump()));
  if (const auto* p = get("lora_dropout")) {
    if (!p->is_number()) throw bad("\"lora_dropout\" is not a number");
    spec.lora_dropout = p->get<double>();
  } else {
    spec.lora_dropout = 0.0;
  }
  const auto strings = [](const nlohmann::json& v) {
    return v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_string(); });
  };
  if (const auto* t = get("target_modules")) {
    if (t->is_string())
      spec.target_regex = t->get<std::string>();  // a regular expression in PEFT
    else if (strings(*t))
      spec.target_modules = t->get<std::vector<std::string>>();
    else
      throw bad("\"target_modules\" is neither a string nor a list of strings");
  } else {
    throw bad("\"target_modules\" is missing (vidlora does not guess a model's default targets)");
  }
  if (const auto* e = get("exclude_modules")) {
    if (e->is_string())
      spec.exclude_regex = e->get<std::string>();
    else if (strings(*e))
      spec.exclude_modules = e->get<std::vector<std::string>>();
    else
      throw bad("\"exclude_modules\" is neither a string nor a list of strings");
  }
  if (const auto* l = get("layers_to_transform")) {
    if (l->is_number_integer())
      spec.layers_to_transform = {l->get<int>()};
    else if (l->is_array() && std::all_of(l->begin(), l->end(), [](const auto& e) { return e.is_number_integer(); }))
      spec.layers_to_transform = l->get<std::vector<int>>();
    else
      throw bad(fmt::format("\"layers_to_transform\" {} is neither an integer nor a list of integers", l->dump()));
  }
  if (const auto* p = get("layers_pattern")) {
    if (p->is_string())
      spec.layers_pattern = {p->get<std::string>()};
    else if (strings(*p))
      spec.layers_pattern = p->get<std::vector<std::string>>();
    else
      throw bad("\"layers_pattern\" is neither a string nor a list of strings");
  }
  if (spec.target_regex && !spec.layers_to_transform.empty())
    throw bad(
        "\"layers_to_transform\" with a regular expression as \"target_modules\" (PEFT refuses it too: the "
        "expression alone selects the modules)");
  // Compile the patterns now: a bad one is an error about this file.
  try {
    (void)spec.targets();
  } catch (const Error& e) {
    throw bad(e.what());
  }
  if (const auto* m = get("modules_to_save")) {
    if (!strings(*m)) throw bad(fmt::format("\"modules_to_save\" {} is not a list of strings", m->dump()));
    spec.modules_to_save = m->get<std::vector<std::string>>();
  }
  if (const auto* b = get("base_model_name_or_path"); b && b->is_string())
    spec.base_model_name_or_path = b->get<std::string>();
  if (const auto* u = get("use_rslora")) {
    if (!u->is_boolean()) throw bad("\"use_rslora\" is not true/false");
    spec.use_rslora = u->get<bool>();
  }
  if (const auto* b = get("bias"); b && b->is_string()) spec.bias = b->get<std::string>();
  if (const auto* t = get("task_type"); t && t->is_string())
    spec.task_type = t->get<std::string>();
  else
    spec.task_type.clear();
  return spec;
}

}  // namespace detail

// Writes `dir`/adapter_model.safetensors then `dir`/adapter_config.json (each atomically; `dir` is
// created). Every module must match a target_modules entry and have A [r, in], B [out, r], finite. `saved`: the
// modules_to_save tensors, named without "base_model.model." ("model.multi_modal_projector.linear_1.weight"), each
// under a module spec.modules_to_save selects.
inline void save_peft_adapter(const std::filesystem::path& dir, const AdapterSpec& spec, const AdapterModules& modules,
                              const io::TensorMap& saved = {}) {
  require(spec.r > 0, "save_peft_adapter: r = {} must be positive", spec.r);
  require(!spec.target_modules.empty() || spec.target_regex, "save_peft_adapter: target_modules is empty");
  require(!modules.empty(), "save_peft_adapter: no modules to save");
  const PeftTargets targets = spec.targets();
  io::TensorMap tensors;
  for (const auto& entry : modules) {
    const std::string& path = entry.first;  // not a structured binding: clang 14 cannot capture those
    const AdapterWeights& w = entry.second;
    require(targets.matches(path), "save_peft_adapter: module '{}' matches none of target_modules {}", path,
            spec.target_regex ? *spec.target_regex : fmt::format("[{}]", fmt::join(spec.target_modules, ", ")));
    require(w.A.rows() == spec.r && w.A.cols() > 0, "save_peft_adapter: module '{}': lora_A is {}, expected [{}, in]",
            path, shape_string(w.A), spec.r);
    require(w.B.cols() == spec.r && w.B.rows() > 0, "save_peft_adapter: module '{}': lora_B is {}, expected [out, {}]",
            path, shape_string(w.B), spec.r);
    require(all_finite(w.A) && all_finite(w.B), "save_peft_adapter: module '{}' has NaN or Inf in its LoRA factors",
            path);
    tensors.emplace(peft_key(path, 'A'), io::TensorData::from_matrix(w.A));
    tensors.emplace(peft_key(path, 'B'), io::TensorData::from_matrix(w.B));
  }
  for (const auto& module : spec.modules_to_save) {  // PEFT's file would lack what its config says it saves
    AdapterSpec only;
    only.modules_to_save = {module};
    require(std::any_of(saved.begin(), saved.end(), [&](const auto& t) { return saved_module_tensor(only, t.first); }),
            "save_peft_adapter: modules_to_save entry '{}' selects none of the tensors given to save", module);
  }
  for (const auto& entry : saved) {
    const std::string& name = entry.first;
    require(saved_module_tensor(spec, name), "save_peft_adapter: tensor '{}' is under none of modules_to_save [{}]",
            name, fmt::join(spec.modules_to_save, ", "));
    require(!name.ends_with(".lora_A.weight") && !name.ends_with(".lora_B.weight"),
            "save_peft_adapter: modules_to_save tensor '{}' is named as a LoRA factor", name);
    tensors.emplace(std::string(kPeftKeyPrefix) + name, entry.second);
  }
  const std::string config = detail::adapter_config_json(spec).dump(2, ' ', /*ensure_ascii=*/true);
  std::filesystem::create_directories(dir);
  io::write_safetensors(dir / kAdapterWeightsName, tensors, {{"format", "pt"}});
  io::write_file_atomically(dir / kAdapterConfigName, config);
}

// adapter_config.json alone, checked as load_peft_adapter checks it (no tensor is read): what a caller needs before it
// builds the layers the factors go into (r, alpha, rsLoRA, dropout).
inline AdapterSpec read_adapter_spec(const std::filesystem::path& dir) {
  return detail::parse_adapter_config(dir / kAdapterConfigName);
}

inline void save_peft_adapter(const std::filesystem::path& dir, const PeftAdapter& adapter) {
  require(
      adapter.saved_tensors.empty(),
      "save_peft_adapter: the adapter's modules_to_save tensors ({}) are in its file, not in PeftAdapter: pass them "
      "as `saved`",
      fmt::join(adapter.saved_tensors, ", "));
  save_peft_adapter(dir, adapter.spec, adapter.modules);
}

// Reads a PEFT LoRA adapter directory. Every key must be a lora_A / lora_B weight (every module needs both, with
// ranks equal to the config's r) or a tensor of a module modules_to_save selects (listed in saved_tensors); anything
// else is an error naming the key.
inline PeftAdapter load_peft_adapter(const std::filesystem::path& dir) {
  PeftAdapter adapter;
  adapter.spec = read_adapter_spec(dir);
  require(std::filesystem::exists(dir / kAdapterWeightsName) || !std::filesystem::exists(dir / "adapter_model.bin"),
          "PEFT adapter '{}': it has adapter_model.bin (a PyTorch pickle, which vidlora does not read) and no {}: save "
          "it with save_pretrained(..., safe_serialization=True), PEFT's default",
          dir.string(), kAdapterWeightsName);
  const auto file = io::SafetensorsFile::open(dir / kAdapterWeightsName);
  const std::string source = file.source();
  constexpr std::string_view kA = ".lora_A.weight", kB = ".lora_B.weight";
  std::map<std::string, std::pair<bool, bool>> seen;  // module -> (has A, has B)
  for (const auto& key : file.names()) {
    const std::string_view k(key);
    const bool is_a = k.ends_with(kA), is_b = k.ends_with(kB);
    if (k.starts_with(kPeftKeyPrefix) && !(is_a || is_b) &&
        saved_module_tensor(adapter.spec, k.substr(kPeftKeyPrefix.size()))) {
      adapter.saved_tensors.emplace_back(k.substr(kPeftKeyPrefix.size()));
      continue;
    }
    if (!k.starts_with(kPeftKeyPrefix) || !(is_a || is_b) || k.size() <= kPeftKeyPrefix.size() + kA.size())
      fail("PEFT adapter '{}': unexpected tensor '{}' (expected {}<module>.lora_A.weight / .lora_B.weight{})", source,
           key, kPeftKeyPrefix,
           adapter.spec.modules_to_save.empty()
               ? std::string()
               : fmt::format(", or a tensor of modules_to_save [{}]", fmt::join(adapter.spec.modules_to_save, ", ")));
    const std::string module(k.substr(kPeftKeyPrefix.size(), k.size() - kPeftKeyPrefix.size() - kA.size()));
    require(file.info(key).shape.size() == 2, "PEFT adapter '{}': tensor '{}' has shape {}, expected 2-D", source, key,
            io::dims_string(file.info(key).shape));
    const Matrix m = file.matrix(key);  // F32, F16 or BF16
    auto& weights = adapter.modules[module];
    if (is_a) {
      require(m.rows() == adapter.spec.r, "PEFT adapter '{}': '{}' is {}, but r = {} (expected [{}, in])", source, key,
              shape_string(m), adapter.spec.r, adapter.spec.r);
      weights.A = m;
      seen[module].first = true;
    } else {
      require(m.cols() == adapter.spec.r, "PEFT adapter '{}': '{}' is {}, but r = {} (expected [out, {}])", source, key,
              shape_string(m), adapter.spec.r, adapter.spec.r);
      weights.B = m;
      seen[module].second = true;
    }
  }
  require(!seen.empty(), "PEFT adapter '{}': no LoRA tensors", source);
  for (const auto& [module, has] : seen) {
    if (!has.first) fail("PEFT adapter '{}': missing '{}' (its lora_B is present)", source, peft_key(module, 'A'));
    if (!has.second) fail("PEFT adapter '{}': missing '{}' (its lora_A is present)", source, peft_key(module, 'B'));
  }
  // LoRA on the CLIP tower (what a plain module list does on LLaVA): vidlora runs the tower frozen and
  // without LoRA, so such a file is refused as a whole rather than loaded with those tensors skipped.
  std::vector<std::string> vision;
  for (const auto& entry : seen)
    if (entry.first.find("vision_tower.") != std::string::npos ||
        entry.first.find("vision_model.") != std::string::npos)
      for (const char f : {'A', 'B'}) vision.push_back(peft_key(entry.first, f));
  if (!vision.empty())
    fail(
        "PEFT adapter '{}' adapts the vision tower, which vidlora runs frozen without LoRA ({} tensors: {}); "
        "train the adapter with target_modules restricted to the language model (e.g. the regular expression "
        "\".*language_model.*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\")",
        source, vision.size(), fmt::join(vision, ", "));
  const PeftTargets targets = adapter.spec.targets();
  for (const auto& entry : seen)
    require(
        targets.matches(entry.first),
        "PEFT adapter '{}': module '{}' has LoRA tensors but adapter_config.json's target_modules does not select it",
        source, entry.first);
  return adapter;
}

}  // namespace vidlora::lora
