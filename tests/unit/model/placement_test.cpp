// The placement planner (src/model/placement.h, docs/placement.md): exact
// placements and byte sums on the full-size Flash tensor table (ds4-q2 sizes,
// the file of issue 21), on tiny files written by synth and by the converter,
// and the refusals.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <regex>
#include <set>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/convert.h"
#include "model/placement.h"
#include "model/synth.h"
#include "model/tensor_specs.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::model {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = uint64_t{1} << 20;

uint64_t mib(double x) { return static_cast<uint64_t>(std::llround(x * static_cast<double>(kMiB))); }

const std::vector<PlacementTensor>& flash_q2() {
  static const std::vector<PlacementTensor> v = placement_tensors(preset_config("flash"), "ds4-q2");
  return v;
}

DeviceBudget device(int id, uint64_t free_bytes) {
  DeviceBudget d;
  d.id = id;
  d.free_bytes = free_bytes;
  return d;
}

uint64_t sum_if(const std::vector<PlacementTensor>& v, bool routed) {
  uint64_t s = 0;
  for (const auto& t : v)
    if ((t.kind == TensorKind::routed_expert) == routed) s += t.device_bytes;
  return s;
}

// The Flash q2 figures (checked against the CUDA backend's message in
// FlashQ2SizesAreTheCudaFigure).
const uint64_t kLayerExperts = uint64_t{1728} * kMiB;  // 256 experts of one layer
const uint64_t kExpert = kLayerExperts / 256;
uint64_t flash_dense() { return sum_if(flash_q2(), false); }

// What every plan must hold: each stacked tensor's experts are placed exactly
// once ([0, E) tiled without overlap); every other tensor once, or once per
// device when the dense parts are replicated; piece sizes are the per-expert
// size times the count (device or host bytes by place); the totals are the
// sums of the pieces; no device holds more than it can use.
void check_invariants(const PlacementPlan& p) {
  const size_t n = p.devices.size();
  std::vector<uint64_t> dev(n, 0);
  uint64_t host = 0;
  std::map<size_t, std::vector<const Placement*>> by_tensor;
  for (const auto& pl : p.placements) {
    by_tensor[pl.tensor].push_back(&pl);
    (pl.device == kHost ? host : dev[static_cast<size_t>(pl.device)]) += pl.bytes;
  }
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    const PlacementTensor& t = p.tensors[i];
    auto& v = by_tensor[i];
    ASSERT_FALSE(v.empty()) << t.name << " placed nowhere";
    if (t.stacked()) {
      std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->expert_begin < b->expert_begin; });
      uint32_t at = 0;
      for (const Placement* pl : v) {
        EXPECT_EQ(pl->expert_begin, at) << t.name;
        EXPECT_LT(pl->expert_begin, pl->expert_end) << t.name;
        const uint64_t unit = (pl->device == kHost ? t.host_bytes : t.device_bytes) / t.n_expert;
        EXPECT_EQ(pl->bytes, unit * (pl->expert_end - pl->expert_begin)) << t.name;
        at = pl->expert_end;
      }
      EXPECT_EQ(at, t.n_expert) << t.name;
    } else {
      const bool replicated = p.dense_mode == DenseMode::replicated && v[0]->rule == PlaceRule::dense;
      EXPECT_EQ(v.size(), replicated ? n : 1) << t.name;
      std::set<int> places;
      for (const Placement* pl : v) {
        places.insert(pl->device);
        EXPECT_EQ(pl->bytes, pl->device == kHost ? t.host_bytes : t.device_bytes) << t.name;
      }
      EXPECT_EQ(places.size(), v.size()) << t.name;
    }
  }
  for (size_t k = 0; k < n; ++k) {
    EXPECT_EQ(dev[k], p.device_weight_bytes[k]) << "device " << k;
    EXPECT_LE(dev[k], p.devices[k].usable()) << "device " << k;
  }
  EXPECT_EQ(host, p.host_weight_bytes);
  if (p.host_budget) {
    EXPECT_LE(host, *p.host_budget);
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool has_line(const PlacementPlan& p, const std::string& needle) {
  return p.text().find(needle) != std::string::npos;
}

TEST(PlacementKinds, FromGgufNames) {
  EXPECT_EQ(tensor_kind("token_embd.weight"), TensorKind::embedding);
  EXPECT_EQ(tensor_kind("output.weight"), TensorKind::output_head);
  EXPECT_EQ(tensor_kind("output_hc_fn.weight"), TensorKind::output_head);
  EXPECT_EQ(tensor_kind("output_norm.weight"), TensorKind::norm);
  EXPECT_EQ(tensor_kind("blk.3.attn_q_b.weight"), TensorKind::attention);
  EXPECT_EQ(tensor_kind("blk.3.attn_sinks.weight"), TensorKind::attention);
  EXPECT_EQ(tensor_kind("blk.2.indexer.proj.weight"), TensorKind::attention);
  EXPECT_EQ(tensor_kind("blk.2.indexer_compressor_kv.weight"), TensorKind::attention);
  EXPECT_EQ(tensor_kind("blk.2.attn_compressor_norm.weight"), TensorKind::norm);
  EXPECT_EQ(tensor_kind("blk.0.attn_norm.weight"), TensorKind::norm);
  EXPECT_EQ(tensor_kind("blk.0.ffn_norm.weight"), TensorKind::norm);
  EXPECT_EQ(tensor_kind("blk.0.ffn_gate_inp.weight"), TensorKind::router);
  EXPECT_EQ(tensor_kind("blk.9.exp_probs_b.bias"), TensorKind::router);
  EXPECT_EQ(tensor_kind("blk.1.ffn_gate_tid2eid.weight"), TensorKind::router);
  EXPECT_EQ(tensor_kind("blk.1.ffn_up_shexp.weight"), TensorKind::shared_expert);
  EXPECT_EQ(tensor_kind("blk.42.ffn_down_exps.weight"), TensorKind::routed_expert);
  EXPECT_EQ(tensor_kind("blk.42.hc_ffn_fn.weight"), TensorKind::other);
  EXPECT_EQ(tensor_kind("mtp.something"), TensorKind::other);
  EXPECT_EQ(tensor_layer("blk.42.ffn_down_exps.weight"), 42);
  EXPECT_EQ(tensor_layer("blk.x.ffn_down_exps.weight"), -1);
  EXPECT_EQ(tensor_layer("blk.7"), -1);
  EXPECT_EQ(tensor_layer("output.weight"), -1);
}

TEST(PlacementTensors, FlashQ2SizesAreTheCudaFigure) {
  // Issue 21: "the full 43-layer ds4-q2 Flash file needs 82697.7 MiB of device
  // memory for weights". The ds4-q2 recipe's table gives exactly that.
  uint64_t total = 0;
  std::map<int, uint64_t> routed;
  size_t stacked = 0;
  for (const auto& t : flash_q2()) {
    total += t.device_bytes;
    EXPECT_EQ(t.device_bytes, t.host_bytes) << t.name;
    if (t.kind == TensorKind::routed_expert) {
      routed[t.layer] += t.device_bytes;
      EXPECT_EQ(t.n_expert, 256u) << t.name;
      ++stacked;
    }
  }
  EXPECT_EQ(total, 86714775900u);
  EXPECT_EQ(fmt::format("{:.1f}", static_cast<double>(total) / static_cast<double>(kMiB)), "82697.7");
  EXPECT_EQ(stacked, 43u * 3);
  ASSERT_EQ(routed.size(), 43u);
  for (const auto& [l, b] : routed) EXPECT_EQ(b, kLayerExperts) << "layer " << l;
  EXPECT_EQ(flash_dense(), 86714775900u - 43 * kLayerExperts);
}

TEST(PlacementTensors, FileDirectoryEqualsTheRecipeTable) {
  log::set_level(log::Level::warn);
  const fs::path path = fs::temp_directory_path() / ("ds4_placement_" + std::to_string(::getpid()) + ".gguf");
  SynthOptions so;
  so.shape = "tiny";
  so.recipe = "ds4-q2";
  so.output = path.string();
  synth(so);
  const gguf::File f = gguf::File::open(path.string());
  const auto from_file = placement_tensors(f);
  const auto from_table = placement_tensors(preset_config("tiny"), "ds4-q2");
  fs::remove(path);
  ASSERT_EQ(from_file.size(), from_table.size());
  for (size_t i = 0; i < from_file.size(); ++i) {
    EXPECT_EQ(from_file[i].name, from_table[i].name);
    EXPECT_EQ(from_file[i].type, from_table[i].type) << from_file[i].name;
    EXPECT_EQ(from_file[i].host_bytes, from_table[i].host_bytes) << from_file[i].name;
    EXPECT_EQ(from_file[i].kind, from_table[i].kind) << from_file[i].name;
    EXPECT_EQ(from_file[i].n_expert, from_table[i].n_expert) << from_file[i].name;
  }
}

TEST(PlacementSingle, AllOnTheDeviceWhenItFits) {
  const auto p = plan_placement(flash_q2(), {device(0, mib(100000))}, {});
  check_invariants(p);
  EXPECT_EQ(p.device_weight_bytes[0], 86714775900u);
  EXPECT_EQ(p.host_weight_bytes, 0u);
  for (int l = 0; l < 43; ++l) EXPECT_EQ(p.experts_at(l, 0), 256u) << l;
  EXPECT_TRUE(has_line(p, "routed experts of layers 0-42")) << p.text();
  EXPECT_TRUE(has_line(p, "host: 0.0 MiB (host memory not checked): nothing")) << p.text();
}

TEST(PlacementSingle, H100CaseOfIssue21) {
  // 82697.7 MiB of weights (+256 MiB working room) on a card with 80552.2 MiB free.
  PlacementOptions o;
  o.host_bytes = mib(24000);
  const auto p = plan_placement(flash_q2(), {device(0, mib(80552.2))}, o);
  check_invariants(p);
  const uint64_t usable = mib(80552.2) - 256 * kMiB;
  // Whole layers that fit after the dense parts: 41 of 43.
  EXPECT_EQ((usable - flash_dense()) / kLayerExperts, 41u);
  for (int l = 0; l < 41; ++l) {
    EXPECT_EQ(p.experts_at(l, 0), 256u) << l;
    EXPECT_EQ(p.experts_at(l, kHost), 0u) << l;
  }
  for (int l = 41; l < 43; ++l) {
    EXPECT_EQ(p.experts_at(l, 0), 0u) << l;
    EXPECT_EQ(p.experts_at(l, kHost), 256u) << l;
  }
  EXPECT_EQ(p.device_weight_bytes[0], flash_dense() + 41 * kLayerExperts);
  EXPECT_LE(p.device_weight_bytes[0], usable);
  EXPECT_EQ(p.host_weight_bytes, 2 * kLayerExperts);
  EXPECT_EQ(p.places_of("blk.40.ffn_gate_exps.weight", 255), std::vector<int>{0});
  EXPECT_EQ(p.places_of("blk.41.ffn_gate_exps.weight", 0), std::vector<int>{kHost});
  EXPECT_EQ(p.places_of("blk.42.attn_q_b.weight"), std::vector<int>{0});
  EXPECT_EQ(p.places_of("output.weight"), std::vector<int>{0});
  for (const auto& pl : p.placements)
    if (pl.device == kHost) {
      EXPECT_EQ(pl.rule, PlaceRule::spill);
    }
  EXPECT_TRUE(has_line(p, "routed experts of layers 0-40")) << p.text();
  EXPECT_TRUE(has_line(p, "host: 3456.0 MiB of 24000.0 MiB usable: routed experts of layers 41-42")) << p.text();
  EXPECT_TRUE(has_line(p, "41 of 43 layers fit")) << p.text();
}

TEST(PlacementSingle, WholeLayerBoundaryIsExact) {
  const uint64_t exact = flash_dense() + 41 * kLayerExperts + 256 * kMiB;
  const auto fits = plan_placement(flash_q2(), {device(0, exact)}, {});
  check_invariants(fits);
  EXPECT_EQ(fits.experts_at(40, 0), 256u);
  EXPECT_EQ(fits.experts_at(41, kHost), 256u);
  EXPECT_EQ(fits.device_weight_bytes[0], fits.devices[0].usable());
  const auto short_by_one = plan_placement(flash_q2(), {device(0, exact - 1)}, {});
  check_invariants(short_by_one);
  EXPECT_EQ(short_by_one.experts_at(39, 0), 256u);
  EXPECT_EQ(short_by_one.experts_at(40, kHost), 256u);
  EXPECT_EQ(short_by_one.host_weight_bytes, 3 * kLayerExperts);
}

TEST(PlacementSingle, ScratchAndReserveCount) {
  DeviceBudget d = device(0, flash_dense() + 41 * kLayerExperts + 256 * kMiB);
  d.scratch_bytes = 1;  // one byte of pass scratch costs a whole layer here
  const auto p = plan_placement(flash_q2(), {d}, {});
  EXPECT_EQ(p.experts_at(40, kHost), 256u);
  d.scratch_bytes = 0;
  d.reserve_bytes = 0;
  const auto q = plan_placement(flash_q2(), {d}, {});
  EXPECT_EQ(q.experts_at(40, 0), 256u);
  EXPECT_EQ(q.experts_at(41, kHost), 256u);  // 256 MiB is less than a layer
}

TEST(PlacementSingle, SpillBytesCountOnlyWhenExpertsStayOnTheHost) {
  // Exactly 41 layers' experts fit; the backend's staging for streaming host
  // experts (spill_bytes) is needed because two layers stay on the host, and
  // taking it leaves room for 40.
  DeviceBudget d = device(0, flash_dense() + 41 * kLayerExperts + 256 * kMiB);
  d.spill_bytes = 128 * kMiB;
  const auto p = plan_placement(flash_q2(), {d}, {});
  check_invariants(p);
  EXPECT_EQ(p.experts_at(39, 0), 256u);
  EXPECT_EQ(p.experts_at(40, kHost), 256u);
  EXPECT_EQ(p.devices[0].scratch_bytes, 128 * kMiB);
  EXPECT_TRUE(has_line(p, "devices: 128.0 MiB of each device set aside")) << p.text();
  // Where every expert fits, nothing is set aside.
  DeviceBudget big = device(0, mib(100000));
  big.spill_bytes = 128 * kMiB;
  const auto q = plan_placement(flash_q2(), {big}, {});
  check_invariants(q);
  EXPECT_EQ(q.host_weight_bytes, 0u);
  EXPECT_EQ(q.devices[0].scratch_bytes, 0u);
  EXPECT_FALSE(has_line(q, "set aside")) << q.text();
  // --cpu-moe: every expert on the host, the staging taken from the room.
  PlacementOptions moe;
  moe.cpu_moe = true;
  const auto r = plan_placement(flash_q2(), {big}, moe);
  check_invariants(r);
  EXPECT_EQ(r.devices[0].scratch_bytes, 128 * kMiB);
  EXPECT_TRUE(has_line(r, "set aside")) << r.text();
}

TEST(PlacementSingle, SplitLayerFillsTheRoomLeft) {
  PlacementOptions o;
  o.split_layer = true;
  const auto p = plan_placement(flash_q2(), {device(0, mib(80552.2))}, o);
  check_invariants(p);
  const uint64_t left = mib(80552.2) - 256 * kMiB - flash_dense() - 41 * kLayerExperts;
  const auto fill = static_cast<uint32_t>(left / kExpert);
  EXPECT_EQ(fill, 156u);
  EXPECT_EQ(p.experts_at(40, 0), 256u);
  EXPECT_EQ(p.experts_at(41, 0), fill);
  EXPECT_EQ(p.experts_at(41, kHost), 256u - fill);
  EXPECT_EQ(p.experts_at(42, kHost), 256u);
  EXPECT_EQ(p.places_of("blk.41.ffn_down_exps.weight", fill - 1), std::vector<int>{0});
  EXPECT_EQ(p.places_of("blk.41.ffn_down_exps.weight", fill), std::vector<int>{kHost});
  EXPECT_LT(p.devices[0].usable() - p.device_weight_bytes[0], kExpert);
  EXPECT_TRUE(has_line(p, "routed experts 0-155 of layer 41")) << p.text();
  EXPECT_TRUE(has_line(p, "routed experts 156-255 of layer 41")) << p.text();
}

TEST(PlacementOverrides, CpuMoe) {
  PlacementOptions o;
  o.cpu_moe = true;
  const auto p = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  check_invariants(p);
  EXPECT_EQ(p.device_weight_bytes[0], flash_dense());
  EXPECT_EQ(p.host_weight_bytes, 43 * kLayerExperts);
  for (int l = 0; l < 43; ++l) EXPECT_EQ(p.experts_at(l, kHost), 256u);
  for (const auto& pl : p.placements)
    if (pl.device == kHost) {
      EXPECT_EQ(pl.rule, PlaceRule::cpu_moe);
    }
  EXPECT_TRUE(has_line(p, "--cpu-moe: every routed expert in host memory")) << p.text();
}

TEST(PlacementOverrides, GpuLayersExperts) {
  PlacementOptions o;
  o.gpu_layers_experts = 10;
  const auto p = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  check_invariants(p);
  for (int l = 0; l < 43; ++l) {
    EXPECT_EQ(p.experts_at(l, 0), l < 10 ? 256u : 0u) << l;
    EXPECT_EQ(p.experts_at(l, kHost), l < 10 ? 0u : 256u) << l;
  }
  EXPECT_EQ(p.device_weight_bytes[0], flash_dense() + 10 * kLayerExperts);
  for (const auto& pl : p.placements)
    if (pl.device == kHost) {
      EXPECT_EQ(pl.rule, PlaceRule::gpu_layers_experts);
    }
  o.gpu_layers_experts = 0;
  const auto none = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  EXPECT_EQ(none.device_weight_bytes[0], flash_dense());
  o.gpu_layers_experts = 99;  // more than the model has: all of them
  const auto all = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  EXPECT_EQ(all.host_weight_bytes, 0u);
  o.gpu_layers_experts = 42;  // only 41 fit on the H100
  const std::string e = error_of([&] { plan_placement(flash_q2(), {device(0, mib(80552.2))}, o); });
  EXPECT_NE(e.find("--gpu-layers-experts 42: the routed experts of layers 0-41 need 72576.0 MiB"), std::string::npos) << e;
  EXPECT_NE(e.find("at most 41 layers fit"), std::string::npos) << e;
}

TEST(PlacementOverrides, FirstMatchWins) {
  PlacementOptions o;
  o.overrides = {parse_tensor_override(R"(blk\.0\.ffn_.*_exps=cpu)"),
                 parse_tensor_override(R"(blk\.[0-9]+\.ffn_.*_exps=cuda0)")};
  const auto p = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  check_invariants(p);
  EXPECT_EQ(p.experts_at(0, kHost), 256u);
  EXPECT_EQ(p.experts_at(1, 0), 256u);
  for (const auto& pl : p.placements) {
    const auto& t = p.tensors[pl.tensor];
    if (t.kind != TensorKind::routed_expert) continue;
    EXPECT_EQ(pl.rule, PlaceRule::override_tensor) << t.name;
    EXPECT_EQ(pl.override_index, t.layer == 0 ? 0 : 1) << t.name;
  }
  std::swap(o.overrides[0], o.overrides[1]);
  const auto q = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  EXPECT_EQ(q.experts_at(0, 0), 256u);
  EXPECT_EQ(q.host_weight_bytes, 0u);
  EXPECT_TRUE(has_line(q, R"(--override-tensor 'blk\.0\.ffn_.*_exps=cpu' matched no tensor)")) << q.text();
}

TEST(PlacementOverrides, BeforeCpuMoeAndTheDenseRule) {
  PlacementOptions o;
  o.cpu_moe = true;
  o.overrides = {parse_tensor_override(R"(blk\.5\.ffn_(gate|up|down)_exps=cuda0)"),
                 parse_tensor_override(R"(blk\.[0-9]+\.attn_q_b=host)")};  // not blk.N.indexer.attn_q_b
  const auto p = plan_placement(flash_q2(), {device(0, mib(100000))}, o);
  check_invariants(p);
  uint64_t q_b = 0;
  for (const auto& t : flash_q2())
    if (t.name.ends_with(".attn_q_b.weight") && t.name.find("indexer") == std::string::npos) q_b += t.host_bytes;
  EXPECT_EQ(q_b, 43u * 1024 * 32768 / 32 * 34);  // Q8_0 [1024, 64*512] per layer
  EXPECT_EQ(p.experts_at(5, 0), 256u);
  EXPECT_EQ(p.experts_at(4, kHost), 256u);
  EXPECT_EQ(p.places_of("blk.7.attn_q_b.weight"), std::vector<int>{kHost});
  EXPECT_EQ(p.device_weight_bytes[0], flash_dense() - q_b + kLayerExperts);
  EXPECT_EQ(p.host_weight_bytes, 42 * kLayerExperts + q_b);
}

TEST(PlacementOverrides, AnOverrideThatOverfillsIsRefused) {
  PlacementOptions o;
  o.overrides = {parse_tensor_override("_exps=cuda0")};
  const std::string e = error_of([&] { plan_placement(flash_q2(), {device(0, mib(70000))}, o); });
  EXPECT_NE(e.find("--override-tensor puts 74304.0 MiB of weights on cuda0, which has 69744.0 MiB usable"),
            std::string::npos)
      << e;
  // ... and then the dense parts do not fit either.
  o.overrides = {parse_tensor_override(R"(blk\.([0-9]|[1-3][0-9]|4[01])\.ffn_.*_exps=cuda0)")};
  const std::string d = error_of([&] { plan_placement(flash_q2(), {device(0, mib(80552.2))}, o); });
  EXPECT_NE(d.find("after 72576.0 MiB placed by --override-tensor"), std::string::npos) << d;
}

TEST(PlacementMulti, TwoDevicesSplitByExpertRanges) {
  const auto p = plan_placement(flash_q2(), {device(0, mib(80552.2)), device(1, mib(80552.2))}, {});
  check_invariants(p);
  EXPECT_EQ(p.dense_mode, DenseMode::replicated);
  for (int l = 0; l < 43; ++l) {
    EXPECT_EQ(p.experts_at(l, 0), 128u) << l;
    EXPECT_EQ(p.experts_at(l, 1), 128u) << l;
  }
  EXPECT_EQ(p.places_of("blk.7.ffn_up_exps.weight", 127), std::vector<int>{0});
  EXPECT_EQ(p.places_of("blk.7.ffn_up_exps.weight", 128), std::vector<int>{1});
  EXPECT_EQ(p.places_of("blk.7.attn_kv.weight"), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.device_weight_bytes[0], flash_dense() + 43 * kLayerExperts / 2);
  EXPECT_EQ(p.device_weight_bytes[1], p.device_weight_bytes[0]);
  EXPECT_EQ(p.host_weight_bytes, 0u);
  EXPECT_TRUE(has_line(p, "routed experts 0-127 of layers 0-42")) << p.text();
  EXPECT_TRUE(has_line(p, "routed experts 128-255 of layers 0-42")) << p.text();
  EXPECT_TRUE(has_line(p, "balanced by bytes")) << p.text();
}

TEST(PlacementMulti, FourDevices) {
  std::vector<DeviceBudget> d;
  for (int k = 0; k < 4; ++k) d.push_back(device(k, mib(40000)));
  const auto p = plan_placement(flash_q2(), d, {});
  check_invariants(p);
  EXPECT_EQ(p.dense_mode, DenseMode::replicated);
  for (int l = 0; l < 43; ++l)
    for (int k = 0; k < 4; ++k) EXPECT_EQ(p.experts_at(l, k), 64u) << l << " " << k;
  for (int k = 0; k < 4; ++k) EXPECT_EQ(p.device_weight_bytes[static_cast<size_t>(k)], flash_dense() + 43 * 64 * kExpert);
  EXPECT_EQ(p.places_of("blk.20.ffn_gate_exps.weight", 191), std::vector<int>{2});
  EXPECT_EQ(p.places_of("blk.20.ffn_gate_exps.weight", 192), std::vector<int>{3});
}

TEST(PlacementMulti, ThreeDevicesBalancedWithinOneExpert) {
  std::vector<DeviceBudget> d;
  for (int k = 0; k < 3; ++k) d.push_back(device(k, mib(40000)));
  const auto p = plan_placement(flash_q2(), d, {});
  check_invariants(p);
  const auto [lo, hi] = std::minmax_element(p.device_weight_bytes.begin(), p.device_weight_bytes.end());
  EXPECT_LE(*hi - *lo, kExpert);
  for (int l = 0; l < 43; ++l) {
    uint32_t sum = 0;
    for (int k = 0; k < 3; ++k) {
      EXPECT_GE(p.experts_at(l, k), 85u);
      EXPECT_LE(p.experts_at(l, k), 86u);
      sum += p.experts_at(l, k);
    }
    EXPECT_EQ(sum, 256u);
  }
  EXPECT_EQ(p.host_weight_bytes, 0u);
}

TEST(PlacementMulti, UnequalDevices) {
  // An equal split fits both: equal shares, balanced by bytes.
  const auto eq = plan_placement(flash_q2(), {device(0, mib(80552.2)), device(1, mib(60000))}, {});
  check_invariants(eq);
  for (int l = 0; l < 43; ++l) EXPECT_EQ(eq.experts_at(l, 1), 128u);
  // It does not: shares in proportion to the room each has, the same in every layer (within one expert).
  const auto pr = plan_placement(flash_q2(), {device(0, mib(80552.2)), device(1, mib(24000))}, {});
  check_invariants(pr);
  EXPECT_EQ(pr.host_weight_bytes, 0u);
  const double room0 = static_cast<double>(mib(80552.2) - 256 * kMiB - flash_dense());
  const double room1 = static_cast<double>(mib(24000) - 256 * kMiB - flash_dense());
  const double want1 = 256 * room1 / (room0 + room1);
  for (int l = 0; l < 43; ++l) {
    EXPECT_NEAR(pr.experts_at(l, 1), want1, 1.0) << l;
    EXPECT_EQ(pr.experts_at(l, 0) + pr.experts_at(l, 1), 256u);
  }
  EXPECT_TRUE(has_line(pr, "in proportion to the room each device has left")) << pr.text();
}

TEST(PlacementMulti, SpillWithSeveralDevices) {
  // Two 40000 MiB cards: dense on both, then 128 + 128 experts a layer while they fit.
  PlacementOptions o;
  o.host_bytes = mib(100000);
  const auto p = plan_placement(flash_q2(), {device(0, mib(40000)), device(1, mib(40000))}, o);
  check_invariants(p);
  const uint64_t per_dev = mib(40000) - 256 * kMiB - flash_dense();
  const auto layers = static_cast<int>(per_dev / (kLayerExperts / 2));
  EXPECT_EQ(layers, 36);
  for (int l = 0; l < 43; ++l) {
    EXPECT_EQ(p.experts_at(l, 0), l < layers ? 128u : 0u) << l;
    EXPECT_EQ(p.experts_at(l, kHost), l < layers ? 0u : 256u) << l;
  }
}

TEST(PlacementMulti, AutoDevices) {
  PlacementOptions o;
  o.auto_devices = true;
  // Fits the first card: only it is used.
  const auto one = plan_placement(flash_q2(), {device(0, mib(100000)), device(1, mib(100000))}, o);
  check_invariants(one);
  ASSERT_EQ(one.devices.size(), 1u);
  EXPECT_EQ(one.host_weight_bytes, 0u);
  EXPECT_TRUE(has_line(one, "the model fits cuda0 alone, so the other 1 device are left out")) << one.text();
  // Does not: both.
  const auto two = plan_placement(flash_q2(), {device(0, mib(80552.2)), device(1, mib(80552.2))}, o);
  check_invariants(two);
  ASSERT_EQ(two.devices.size(), 2u);
  EXPECT_EQ(two.host_weight_bytes, 0u);
  EXPECT_TRUE(has_line(two, "does not fit cuda0 alone, so all 2 devices are used")) << two.text();
}

TEST(PlacementMulti, DenseSplitByLayersWhenACopyDoesNotFit) {
  std::vector<DeviceBudget> d;
  for (int k = 0; k < 4; ++k) d.push_back(device(k, mib(6000)));
  PlacementOptions o;
  const auto p = plan_placement(flash_q2(), d, o);
  check_invariants(p);
  EXPECT_EQ(p.dense_mode, DenseMode::split_by_layers);
  EXPECT_EQ(p.places_of("token_embd.weight"), std::vector<int>{0});
  EXPECT_EQ(p.places_of("output.weight"), std::vector<int>{3});
  // A layer's dense parts stay together, and layers are in order across devices.
  int last = 0;
  for (int l = 0; l < 43; ++l) {
    const auto a = p.places_of(fmt::format("blk.{}.attn_q_b.weight", l));
    const auto n = p.places_of(fmt::format("blk.{}.ffn_norm.weight", l));
    ASSERT_EQ(a.size(), 1u);
    EXPECT_EQ(a, n) << l;
    EXPECT_GE(a[0], last) << l;
    last = a[0];
  }
  uint64_t dense = 0;
  for (const auto& pl : p.placements)
    if (pl.rule == PlaceRule::dense) dense += pl.bytes;
  EXPECT_EQ(dense, flash_dense());
  EXPECT_TRUE(has_line(p, "split by layers over the 4 devices")) << p.text();
}

TEST(PlacementRefusals, DenseDoesNotFit) {
  const std::string e = error_of([] { plan_placement(flash_q2(), {device(0, mib(8000))}, {}); });
  EXPECT_NE(e.find("need 8393.7 MiB on cuda0, which has 7744.0 MiB usable (8000.0 MiB free - 256.0 MiB working room"),
            std::string::npos)
      << e;
  const std::string s = error_of([] { plan_placement(flash_q2(), {device(0, mib(3000)), device(1, mib(3000))}, {}); });
  EXPECT_NE(s.find("split by layers they do not fit the 2 devices either (usable: cuda0 2744.0 MiB, cuda1 2744.0 MiB; "
                   "5488.0 MiB in all)"),
            std::string::npos)
      << s;
}

TEST(PlacementRefusals, HostAndDevicesCannotHoldTheModel) {
  PlacementOptions o;
  o.host_bytes = mib(3000);
  const std::string e = error_of([&] { plan_placement(flash_q2(), {device(0, mib(80552.2))}, o); });
  EXPECT_NE(e.find("3456.0 MiB of weights must stay in host memory, which has 3000.0 MiB usable (456.0 MiB short)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("the whole model is 82697.7 MiB as stored"), std::string::npos) << e;
  o.host_bytes = 2 * kLayerExperts;  // exactly enough
  const auto p = plan_placement(flash_q2(), {device(0, mib(80552.2))}, o);
  EXPECT_EQ(p.host_weight_bytes, 2 * kLayerExperts);
}

TEST(PlacementRefusals, InconsistentOptions) {
  PlacementOptions o;
  o.cpu_moe = true;
  o.gpu_layers_experts = 3;
  EXPECT_NE(error_of([&] { plan_placement(flash_q2(), {device(0, mib(100000))}, o); })
                .find("--cpu-moe and --gpu-layers-experts 3 exclude each other"),
            std::string::npos);
  PlacementOptions v;
  v.overrides = {parse_tensor_override("exps=cuda3")};
  const std::string e = error_of([&] { plan_placement(flash_q2(), {device(0, mib(1)), device(1, mib(1))}, v); });
  EXPECT_NE(e.find("'exps=cuda3': cuda3 is not in the device group (cuda0, cuda1)"), std::string::npos) << e;
  EXPECT_NE(error_of([] { plan_placement(flash_q2(), {device(1, mib(1)), device(1, mib(1))}, {}); })
                .find("device cuda1 is listed twice"),
            std::string::npos);
}

TEST(PlacementFlags, Parse) {
  auto o = parse_tensor_override(R"(blk\.4[0-2]\..*_exps=CPU)");
  EXPECT_EQ(o.device, kHost);
  EXPECT_TRUE(std::regex_search("blk.41.ffn_up_exps.weight", o.re));
  EXPECT_FALSE(std::regex_search("blk.39.ffn_up_exps.weight", o.re));
  EXPECT_EQ(parse_tensor_override("x=cuda1").device, 1);
  EXPECT_EQ(parse_tensor_override("a=b=host").pattern, "a=b");
  EXPECT_NE(error_of([] { parse_tensor_override("noequals"); }).find("expected REGEX=DEVICE"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_override("=cpu"); }).find("expected REGEX=DEVICE"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_override("[=cpu"); }).find("bad regular expression '['"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_override("x=gpu0"); }).find("unknown device 'gpu0'"), std::string::npos);
  EXPECT_EQ(parse_device_ids("0,1,3"), (std::vector<int>{0, 1, 3}));
  EXPECT_NE(error_of([] { parse_device_ids("0,,1"); }).find("'' is not a device number"), std::string::npos);
  EXPECT_NE(error_of([] { parse_device_ids("0,0"); }).find("device 0 is listed twice"), std::string::npos);
  EXPECT_EQ(parse_mib_list("80552.2,81920", "--gpu-mem"), (std::vector<uint64_t>{mib(80552.2), 81920 * kMiB}));
  EXPECT_NE(error_of([] { parse_mib_list("abc", "--gpu-mem"); }).find("--gpu-mem 'abc': 'abc' is not a size in MiB"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_mib_list("-1", "--host-mem"); }).find("not a size"), std::string::npos);
  EXPECT_NE(error_of([] { parse_mib_list("12x", "--host-mem"); }).find("not a size"), std::string::npos);
}

TEST(PlacementDeviceBytes, DeviceAndHostSizesAreKeptApart) {
  // A device that widens IQ2_XXS (gate/up experts) to twice its size: pieces
  // on the device count the widened size, pieces on the host the stored one.
  const DeviceBytes wide = [](GgmlType t, std::span<const int64_t> ne) {
    const uint64_t b = gguf::tensor_nbytes(t, ne);
    return t == GgmlType::IQ2_XXS ? 2 * b : b;
  };
  const auto tensors = placement_tensors(preset_config("flash"), "ds4-q2", wide);
  uint64_t dev_total = 0, host_total = 0;
  for (const auto& t : tensors) {
    dev_total += t.device_bytes;
    host_total += t.host_bytes;
  }
  EXPECT_EQ(host_total, 86714775900u);
  // gate and up are IQ2_XXS: 2 of the 3 expert tensors, 66 of 84+66+66 bytes per 256 values each.
  EXPECT_EQ(dev_total - host_total, uint64_t{43} * 2 * 256 * 2048 * 4096 / 256 * 66);
  const auto p = plan_placement(tensors, {device(0, mib(100000))}, {});
  check_invariants(p);
  EXPECT_GT(p.host_weight_bytes, 0u);
  const auto& gate = p.tensors[static_cast<size_t>(
      std::find_if(p.tensors.begin(), p.tensors.end(), [](const auto& t) { return t.name == "blk.42.ffn_gate_exps.weight"; }) -
      p.tensors.begin())];
  EXPECT_EQ(gate.device_bytes, 2 * gate.host_bytes);
}

TEST(PlacementNoDevice, EverythingOnTheHost) {
  const auto p = plan_placement(flash_q2(), {}, {});
  check_invariants(p);
  EXPECT_EQ(p.dense_mode, DenseMode::none);
  EXPECT_EQ(p.host_weight_bytes, 86714775900u);
}

TEST(PlacementFixtures, ConvertedTinyFlash) {
  // The converter's output for the HF tiny-flash fixture: a plan on a device
  // it fits, and on one that holds its dense parts and two layers' experts.
  log::set_level(log::Level::warn);
  const fs::path out = fs::temp_directory_path() / ("ds4_placement_tf_" + std::to_string(::getpid()) + ".gguf");
  ConvertOptions co;
  co.hf_dir = std::string(DS4_SOURCE_DIR) + "/tests/fixtures/hf/tiny-flash";
  co.output = out.string();
  co.recipe = "q8_0";
  convert(co);
  const gguf::File f = gguf::File::open(out.string());
  const auto tensors = placement_tensors(f);
  fs::remove(out);
  const ModelConfig c = ModelConfig::from_gguf(f);
  uint64_t total = 0, dense = 0, layer = 0;
  for (const auto& t : tensors) {
    total += t.device_bytes;
    if (t.kind != TensorKind::routed_expert) dense += t.device_bytes;
    if (t.kind == TensorKind::routed_expert && t.layer == 0) layer += t.device_bytes;
  }
  const auto fits = plan_placement(tensors, {device(0, total + 256 * kMiB)}, {});
  check_invariants(fits);
  EXPECT_EQ(fits.host_weight_bytes, 0u);
  EXPECT_EQ(fits.device_weight_bytes[0], total);
  const auto two = plan_placement(tensors, {device(0, dense + 2 * layer + 256 * kMiB)}, {});
  check_invariants(two);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    EXPECT_EQ(two.experts_at(static_cast<int>(l), 0), l < 2 ? c.n_expert : 0u) << l;
    EXPECT_EQ(two.experts_at(static_cast<int>(l), kHost), l < 2 ? 0u : c.n_expert) << l;
  }
  EXPECT_EQ(two.host_weight_bytes, total - dense - 2 * layer);
}

}  // namespace
}  // namespace ds4::model
