#include "model/placement.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "model/convert.h"
#include "model/tensor_specs.h"
#include "util/error.h"

namespace ds4::model {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string mib(uint64_t b) { return fmt::format("{:.1f} MiB", static_cast<double>(b) / kMiB); }

// "0-40", "0-2, 5, 7-9" for a sorted list of distinct numbers.
std::string spans(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += j == i ? fmt::format("{}", v[i]) : fmt::format("{}-{}", v[i], v[j]);
    i = j + 1;
  }
  return s;
}

std::string layers_text(const std::vector<int>& v) {
  return fmt::format("{} {}", v.size() == 1 ? "layer" : "layers", spans(v));
}

PlacementTensor make_tensor(std::string name, GgmlType type, std::vector<int64_t> ne, uint64_t host_bytes,
                            const DeviceBytes& dev) {
  PlacementTensor t;
  t.kind = tensor_kind(name);
  t.layer = tensor_layer(name);
  t.type = type;
  t.host_bytes = host_bytes;
  t.device_bytes = dev ? dev(type, ne) : host_bytes;
  if (t.kind == TensorKind::routed_expert) {
    if (ne.size() == 3 && ne[2] > 0 && ne[2] <= std::numeric_limits<uint32_t>::max())
      t.n_expert = static_cast<uint32_t>(ne[2]);
    else
      t.kind = TensorKind::other;  // not a stack of experts: placed whole, as a dense part
  }
  t.name = std::move(name);
  t.ne = std::move(ne);
  return t;
}

// Sizes of a stacked tensor's experts, checked to divide evenly.
uint64_t per_expert(const PlacementTensor& t, uint64_t bytes) {
  if (bytes % t.n_expert != 0)
    fail("placement: tensor '{}': {} bytes are not {} experts of equal size", t.name, bytes, t.n_expert);
  return bytes / t.n_expert;
}

std::string device_label(const DeviceBudget& d) { return fmt::format("cuda{}", d.id); }

// The routed experts of one layer not taken by an override: the planner moves
// them together, expert index by expert index.
struct ExpertGroup {
  int layer = 0;
  uint32_t n_expert = 0;
  std::vector<size_t> tensors;
  uint64_t dev_unit = 0, host_unit = 0;  // bytes of one expert (all the group's tensors)
};

// How many experts of each group each device takes. cnt[g][k]; groups past
// cnt.size() are not placed at all.
struct Assignment {
  std::vector<std::vector<uint32_t>> cnt;
  size_t whole = 0;       // groups placed entirely
  bool hit_wall = false;  // some device had no room for an expert it would have been given
};

class Planner {
 public:
  Planner(std::vector<PlacementTensor> tensors, std::vector<DeviceBudget> devices, const PlacementOptions& opt)
      : opt_(opt) {
    p_.tensors = std::move(tensors);
    p_.devices = std::move(devices);
    p_.host_budget = opt.host_bytes;
    n_ = p_.devices.size();
    room_.resize(n_);
    used_.assign(n_, 0);
    for (size_t k = 0; k < n_; ++k) room_[k] = p_.devices[k].usable();
    p_.device_weight_bytes.assign(n_, 0);
  }

  PlacementPlan run() {
    check_options();
    apply_overrides();
    place_dense();
    place_experts();
    finish();
    return std::move(p_);
  }

 private:
  const PlacementOptions& opt_;
  PlacementPlan p_;
  size_t n_ = 0;
  std::vector<uint64_t> room_, used_;
  std::vector<int> override_of_;
  std::vector<size_t> override_hits_;
  std::vector<ExpertGroup> groups_;
  uint64_t dense_total_ = 0;
  uint64_t expert_room_ = 0;  // device bytes left for routed experts after overrides and dense parts
  bool weighted_ = false;
  std::vector<std::string> why_;

  const std::vector<PlacementTensor>& T() const { return p_.tensors; }
  uint64_t left(size_t k) const { return room_[k] > used_[k] ? room_[k] - used_[k] : 0; }

  int device_index(int id) const {
    for (size_t k = 0; k < n_; ++k)
      if (p_.devices[k].id == id) return static_cast<int>(k);
    return -2;
  }

  std::string group_names() const {
    std::vector<std::string> v;
    for (const auto& d : p_.devices) v.push_back(device_label(d));
    return v.empty() ? "no device" : fmt::format("{}", fmt::join(v, ", "));
  }

  void put(size_t t, int dev, uint32_t b, uint32_t e, PlaceRule rule, int ov = -1) {
    const PlacementTensor& x = T()[t];
    uint64_t bytes;
    if (x.stacked())
      bytes = (dev == kHost ? per_expert(x, x.host_bytes) : per_expert(x, x.device_bytes)) * (e - b);
    else
      bytes = dev == kHost ? x.host_bytes : x.device_bytes;
    p_.placements.push_back({t, dev, b, e, bytes, rule, ov});
    if (dev == kHost)
      p_.host_weight_bytes += bytes;
    else
      used_[static_cast<size_t>(dev)] += bytes;
  }
  void put_whole(size_t t, int dev, PlaceRule rule, int ov = -1) {
    const uint32_t e = T()[t].stacked() ? T()[t].n_expert : 0;
    put(t, dev, 0, e, rule, ov);
  }

  void check_options() {
    if (opt_.cpu_moe && opt_.gpu_layers_experts >= 0)
      fail("placement: --cpu-moe and --gpu-layers-experts {} exclude each other (--cpu-moe puts every routed expert "
           "on the host)",
           opt_.gpu_layers_experts);
    std::set<int> ids;
    for (const auto& d : p_.devices)
      if (!ids.insert(d.id).second) fail("placement: device cuda{} is listed twice", d.id);
    for (const auto& o : opt_.overrides)
      if (o.device != kHost && device_index(o.device) < 0)
        fail("placement: --override-tensor '{}': cuda{} is not in the device group ({})", o.spec, o.device,
             group_names());
  }

  void apply_overrides() {
    override_of_.assign(T().size(), -1);
    override_hits_.assign(opt_.overrides.size(), 0);
    for (size_t i = 0; i < T().size(); ++i)
      for (size_t k = 0; k < opt_.overrides.size(); ++k)
        if (std::regex_search(T()[i].name, opt_.overrides[k].re)) {
          override_of_[i] = static_cast<int>(k);
          ++override_hits_[k];
          const int dev = opt_.overrides[k].device == kHost ? kHost : device_index(opt_.overrides[k].device);
          put_whole(i, dev, PlaceRule::override_tensor, static_cast<int>(k));
          break;
        }
    for (size_t k = 0; k < n_; ++k)
      if (used_[k] > room_[k])
        fail("placement: --override-tensor puts {} of weights on {}, which has {} usable ({} free - {} working room - "
             "{} scratch)",
             mib(used_[k]), device_label(p_.devices[k]), mib(room_[k]), mib(p_.devices[k].free_bytes),
             mib(p_.devices[k].reserve_bytes), mib(p_.devices[k].scratch_bytes));
  }

  bool is_dense(size_t i) const { return override_of_[i] < 0 && T()[i].kind != TensorKind::routed_expert; }

  void place_dense() {
    std::vector<size_t> dense;
    for (size_t i = 0; i < T().size(); ++i)
      if (is_dense(i)) {
        dense.push_back(i);
        dense_total_ += T()[i].device_bytes;
      }
    if (n_ == 0) {
      p_.dense_mode = DenseMode::none;
      for (size_t i : dense) put_whole(i, kHost, PlaceRule::no_device);
      why_.push_back("no device: every weight stays in host memory");
      return;
    }
    const std::string by_override = [&] {
      uint64_t s = 0;
      for (uint64_t u : used_) s += u;
      return s ? fmt::format(" after {} placed by --override-tensor", mib(s)) : std::string();
    }();
    if (n_ == 1) {
      if (dense_total_ > left(0)) {
        const DeviceBudget& d = p_.devices[0];
        fail("placement: the dense parts (embedding, attention, norms, routers, shared experts, output head) need {} "
             "on {}, which has {} usable{} ({} free - {} working room - {} scratch); every token needs them, so they "
             "do not go to host memory",
             mib(dense_total_), device_label(d), mib(left(0)), by_override, mib(d.free_bytes), mib(d.reserve_bytes),
             mib(d.scratch_bytes));
      }
      p_.dense_mode = DenseMode::single;
      for (size_t i : dense) put_whole(i, 0, PlaceRule::dense);
      why_.push_back(fmt::format("dense parts first ({}), on {}: every token needs all of them", mib(dense_total_),
                                 device_label(p_.devices[0])));
      return;
    }
    bool fits_each = true;
    for (size_t k = 0; k < n_; ++k) fits_each = fits_each && dense_total_ <= left(k);
    if (fits_each) {
      p_.dense_mode = DenseMode::replicated;
      for (size_t k = 0; k < n_; ++k)
        for (size_t i : dense) put_whole(i, static_cast<int>(k), PlaceRule::dense);
      why_.push_back(fmt::format(
          "dense parts first ({}), replicated on each of the {} devices: every token needs all of them, and a copy "
          "on each device keeps activations on the device that holds the token",
          mib(dense_total_), n_));
      return;
    }
    split_dense(dense);
  }

  // Dense parts too big for a copy on every device: contiguous runs of layers
  // per device (the embedding with the first, the output head with the last),
  // balanced by bytes; if that overfills a device, filled in order instead.
  void split_dense(const std::vector<size_t>& dense) {
    std::map<int, std::vector<size_t>> by_key;  // -1: embedding and other tensors before the layers
    for (size_t i : dense) {
      const PlacementTensor& t = T()[i];
      const int key = t.layer >= 0 ? t.layer : (t.kind == TensorKind::embedding ? -1 : INT_MAX);
      by_key[key].push_back(i);
    }
    std::vector<std::pair<std::vector<size_t>, uint64_t>> items;
    for (auto& [key, v] : by_key) {
      uint64_t b = 0;
      for (size_t i : v) b += T()[i].device_bytes;
      items.emplace_back(v, b);
    }
    std::vector<uint64_t> cap(n_);
    for (size_t k = 0; k < n_; ++k) cap[k] = left(k);
    std::vector<size_t> dev_of(items.size());
    auto fits = [&] {
      std::vector<uint64_t> load(n_, 0);
      for (size_t j = 0; j < items.size(); ++j) load[dev_of[j]] += items[j].second;
      for (size_t k = 0; k < n_; ++k)
        if (load[k] > cap[k]) return false;
      return true;
    };
    // Balanced: an item goes where the midpoint of its bytes falls.
    uint64_t cum = 0;
    for (size_t j = 0; j < items.size(); ++j) {
      const double mid = (static_cast<double>(cum) + static_cast<double>(items[j].second) / 2) /
                         static_cast<double>(std::max<uint64_t>(dense_total_, 1));
      dev_of[j] = std::min(n_ - 1, static_cast<size_t>(mid * static_cast<double>(n_)));
      cum += items[j].second;
    }
    bool ok = fits();
    if (!ok) {
      size_t k = 0;
      std::vector<uint64_t> load(n_, 0);
      ok = true;
      for (size_t j = 0; j < items.size() && ok; ++j) {
        while (k < n_ && load[k] + items[j].second > cap[k]) ++k;
        if (k == n_) {
          ok = false;
          break;
        }
        load[k] += items[j].second;
        dev_of[j] = k;
      }
    }
    if (!ok) {
      std::vector<std::string> u;
      uint64_t sum = 0;
      for (size_t k = 0; k < n_; ++k) {
        u.push_back(fmt::format("{} {}", device_label(p_.devices[k]), mib(cap[k])));
        sum += cap[k];
      }
      fail("placement: the dense parts (embedding, attention, norms, routers, shared experts, output head) need {}; "
           "a copy does not fit on every device, and split by layers they do not fit the {} devices either (usable: "
           "{}; {} in all); every token needs them, so they do not go to host memory",
           mib(dense_total_), n_, fmt::join(u, ", "), mib(sum));
    }
    p_.dense_mode = DenseMode::split_by_layers;
    for (size_t j = 0; j < items.size(); ++j)
      for (size_t i : items[j].first) put_whole(i, static_cast<int>(dev_of[j]), PlaceRule::dense);
    std::vector<std::string> u;
    for (size_t k = 0; k < n_; ++k) u.push_back(fmt::format("{} {}", device_label(p_.devices[k]), mib(cap[k])));
    why_.push_back(fmt::format(
        "dense parts first ({}), split by layers over the {} devices: a copy on every device does not fit (usable: "
        "{}); tensor parallelism by heads is not planned yet",
        mib(dense_total_), n_, fmt::join(u, ", ")));
  }

  void collect_groups() {
    std::map<int, ExpertGroup> by_layer;
    for (size_t i = 0; i < T().size(); ++i) {
      const PlacementTensor& t = T()[i];
      if (override_of_[i] >= 0 || t.kind != TensorKind::routed_expert) continue;
      ExpertGroup& g = by_layer[t.layer];
      if (g.tensors.empty()) {
        g.layer = t.layer;
        g.n_expert = t.n_expert;
      } else if (g.n_expert != t.n_expert) {
        fail("placement: layer {} stacks {} experts in '{}' but {} in '{}'", t.layer, t.n_expert, t.name, g.n_expert,
             T()[g.tensors[0]].name);
      }
      g.tensors.push_back(i);
      g.dev_unit += per_expert(t, t.device_bytes);
      g.host_unit += per_expert(t, t.host_bytes);
    }
    for (auto& [l, g] : by_layer) groups_.push_back(std::move(g));
  }

  // Experts go one at a time to the device with the lowest assigned bytes
  // divided by its weight, among those with room (ties: the lower index); a
  // group that does not fit entirely ends the assignment (kept only if
  // `partial`). Equal weights balance bytes; weights proportional to the room
  // each device has fill them at the same pace.
  Assignment assign(const std::vector<double>& weight, size_t max_groups, bool partial) const {
    Assignment a;
    std::vector<uint64_t> rem(n_), acc(n_, 0);
    for (size_t k = 0; k < n_; ++k) rem[k] = left(k);
    for (size_t gi = 0; gi < groups_.size() && gi < max_groups; ++gi) {
      const ExpertGroup& g = groups_[gi];
      std::vector<uint32_t> cnt(n_, 0);
      std::vector<uint64_t> r = rem, s = acc;
      uint32_t placed = 0;
      for (uint32_t e = 0; e < g.n_expert; ++e) {
        int best = -1;
        double best_score = 0;
        for (size_t k = 0; k < n_; ++k) {
          if (weight[k] <= 0) continue;
          if (r[k] < g.dev_unit) {
            a.hit_wall = true;
            continue;
          }
          const double score = static_cast<double>(s[k] + g.dev_unit) / weight[k];
          if (best < 0 || score < best_score) {
            best = static_cast<int>(k);
            best_score = score;
          }
        }
        if (best < 0) break;
        const auto b = static_cast<size_t>(best);
        ++cnt[b];
        r[b] -= g.dev_unit;
        s[b] += g.dev_unit;
        ++placed;
      }
      if (placed == g.n_expert) {
        rem = r;
        acc = s;
        a.cnt.push_back(cnt);
        ++a.whole;
        continue;
      }
      if (partial && placed > 0) a.cnt.push_back(cnt);
      break;
    }
    return a;
  }

  void place_experts() {
    collect_groups();
    if (groups_.empty()) return;
    PlaceRule host_rule = PlaceRule::spill;
    size_t max_groups = groups_.size();
    if (n_ == 0) {
      host_rule = PlaceRule::no_device;
      max_groups = 0;
    } else if (opt_.cpu_moe) {
      host_rule = PlaceRule::cpu_moe;
      max_groups = 0;
    } else if (opt_.gpu_layers_experts >= 0) {
      host_rule = PlaceRule::gpu_layers_experts;
      max_groups = 0;
      while (max_groups < groups_.size() && groups_[max_groups].layer < opt_.gpu_layers_experts) ++max_groups;
    }
    for (size_t k = 0; k < n_; ++k) expert_room_ += left(k);
    Assignment a;
    if (max_groups > 0) {
      const bool partial = opt_.split_layer && opt_.gpu_layers_experts < 0;
      a = assign(std::vector<double>(n_, 1.0), max_groups, partial);
      // Equal shares balance the work of expert parallelism; when the rooms
      // differ and equal shares run into the smallest, shares in proportion
      // to the room keep every layer's split alike instead of piling the last
      // layers onto the larger devices.
      uint64_t unit = 0, lo = UINT64_MAX, hi = 0;
      for (const auto& g : groups_) unit = std::max(unit, g.dev_unit);
      for (size_t k = 0; k < n_; ++k) {
        lo = std::min(lo, left(k));
        hi = std::max(hi, left(k));
      }
      if (a.hit_wall && n_ > 1 && hi - lo >= unit) {
        std::vector<double> w(n_);
        for (size_t k = 0; k < n_; ++k) w[k] = static_cast<double>(left(k));
        Assignment b = assign(w, max_groups, partial);
        if (b.whole >= a.whole) {
          a = std::move(b);
          weighted_ = true;
        }
      }
      if (opt_.gpu_layers_experts >= 0 && a.whole < max_groups) {
        uint64_t need = 0, have = 0;
        for (size_t gi = 0; gi < max_groups; ++gi) need += groups_[gi].dev_unit * groups_[gi].n_expert;
        for (size_t k = 0; k < n_; ++k) have += left(k);
        std::vector<int> asked;
        for (size_t gi = 0; gi < max_groups; ++gi) asked.push_back(groups_[gi].layer);
        fail("placement: --gpu-layers-experts {}: the routed experts of {} need {}, but only {} are left on {} after "
             "the dense parts; at most {} layers fit",
             opt_.gpu_layers_experts, layers_text(asked), mib(need), mib(have), group_names(), a.whole);
      }
    }
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      const ExpertGroup& g = groups_[gi];
      uint32_t begin = 0;
      if (gi < a.cnt.size())
        for (size_t k = 0; k < n_; ++k) {
          const uint32_t c = a.cnt[gi][k];
          if (c == 0) continue;
          for (size_t t : g.tensors) put(t, static_cast<int>(k), begin, begin + c, PlaceRule::experts);
          begin += c;
        }
      if (begin < g.n_expert)
        for (size_t t : g.tensors) put(t, kHost, begin, g.n_expert, host_rule);
    }
    explain_experts(a, max_groups);
  }

  void explain_experts(const Assignment& a, size_t max_groups) {
    const size_t L = groups_.size();
    std::vector<int> host_layers, partial_layers;
    for (size_t gi = a.whole; gi < L; ++gi) {
      if (gi < a.cnt.size()) partial_layers.push_back(groups_[gi].layer);
      host_layers.push_back(groups_[gi].layer);
    }
    uint64_t host_bytes = 0;
    for (const auto& pl : p_.placements)
      if (pl.device == kHost && T()[pl.tensor].kind == TensorKind::routed_expert && pl.rule != PlaceRule::override_tensor)
        host_bytes += pl.bytes;
    const std::string where = n_ == 1 ? device_label(p_.devices[0]) : fmt::format("the {} devices", n_);
    if (n_ == 0) return;
    if (opt_.cpu_moe) {
      why_.push_back(fmt::format("--cpu-moe: every routed expert in host memory ({})", mib(host_bytes)));
      return;
    }
    std::string split;
    if (n_ > 1 && a.whole > 0)
      split = fmt::format(", each layer's experts split by expert index ranges across {} (expert parallelism) {}",
                          where,
                          weighted_ ? "in proportion to the room each device has left (the rooms differ, and equal shares would "
                                                "fill the smallest first)"
                                    : "balanced by bytes");
    if (opt_.gpu_layers_experts >= 0) {
      std::vector<int> asked;
      for (size_t gi = 0; gi < max_groups; ++gi) asked.push_back(groups_[gi].layer);
      std::string s = fmt::format("--gpu-layers-experts {}: routed experts of {} on {}{}", opt_.gpu_layers_experts,
                                  asked.empty() ? "no layer" : layers_text(asked), where, split);
      if (!host_layers.empty()) s += fmt::format("; those of {} in host memory ({})", layers_text(host_layers), mib(host_bytes));
      why_.push_back(s);
      return;
    }
    std::string s = fmt::format(
        "routed experts next, whole layers from layer 0 up while they fit: {} of {} layers fit{}", a.whole, L, split);
    if (!host_layers.empty()) {
      std::set<uint64_t> sizes;
      for (const auto& g : groups_) sizes.insert(g.dev_unit * g.n_expert);
      const std::string per =
          sizes.size() == 1 ? fmt::format("{} a layer", mib(*sizes.begin()))
                            : fmt::format("{} to {} a layer", mib(*sizes.begin()), mib(*sizes.rbegin()));
      s += fmt::format(" ({}, {} left for them after the dense parts)", per, mib(expert_room_));
      if (!partial_layers.empty())
        s += fmt::format("; --split-layer-experts: the room left takes {} experts of {}", experts_on_devices(a),
                         layers_text(partial_layers));
      s += fmt::format("; in host memory: {} ({})", fmt::join(describe_pieces(kHost, false), ", "), mib(host_bytes));
    }
    why_.push_back(s);
  }

  uint32_t experts_on_devices(const Assignment& a) const {
    uint32_t n = 0;
    for (size_t gi = a.whole; gi < a.cnt.size(); ++gi)
      for (uint32_t c : a.cnt[gi]) n += c;
    return n;
  }

  void finish() {
    for (size_t k = 0; k < n_; ++k) {
      p_.device_weight_bytes[k] = used_[k];
      if (used_[k] > room_[k])  // the rules never overfill; a guard for the arithmetic
        fail("placement: internal: {} got {} of weights for {} usable", device_label(p_.devices[k]), mib(used_[k]),
             mib(room_[k]));
    }
    if (p_.host_budget && p_.host_weight_bytes > *p_.host_budget) {
      uint64_t host_total = 0;
      for (const auto& t : T()) host_total += t.host_bytes;
      std::vector<std::string> d;
      for (size_t k = 0; k < n_; ++k)
        d.push_back(fmt::format("{} holds {} of {} usable", device_label(p_.devices[k]), mib(used_[k]), mib(room_[k])));
      fail("placement: the model does not fit: {} of weights must stay in host memory, which has {} usable ({} short); "
           "{}; the whole model is {} as stored",
           mib(p_.host_weight_bytes), mib(*p_.host_budget), mib(p_.host_weight_bytes - *p_.host_budget),
           d.empty() ? "no device" : fmt::format("{}", fmt::join(d, ", ")), mib(host_total));
    }
    describe();
  }

  // --- the printed plan ---

  std::string model_line() const {
    int max_layer = -1;
    uint64_t dev_total = 0, host_total = 0, routed = 0, dense = 0;
    std::set<uint32_t> experts;
    std::map<int, uint64_t> per_layer;
    uint64_t unit = 0;
    bool same_unit = true;
    for (const auto& t : T()) {
      max_layer = std::max(max_layer, t.layer);
      dev_total += t.device_bytes;
      host_total += t.host_bytes;
      if (t.kind == TensorKind::routed_expert) {
        routed += t.device_bytes;
        experts.insert(t.n_expert);
        per_layer[t.layer] += t.device_bytes;
      } else {
        dense += t.device_bytes;
      }
    }
    std::map<int, uint64_t> per_layer_unit;
    for (const auto& t : T())
      if (t.kind == TensorKind::routed_expert) per_layer_unit[t.layer] += t.device_bytes / t.n_expert;
    for (const auto& [l, u] : per_layer_unit) {
      if (unit && u != unit) same_unit = false;
      unit = u;
    }
    std::string e = experts.empty() ? "no routed experts"
                    : experts.size() == 1
                        ? fmt::format("{} routed experts a layer", *experts.begin())
                        : fmt::format("{}-{} routed experts a layer", *experts.begin(), *experts.rbegin());
    std::string s = fmt::format("model: {} layers, {}; {} of weights on a device: dense parts {}, routed experts {}",
                                max_layer + 1, e, mib(dev_total), mib(dense), mib(routed));
    if (!per_layer.empty() && same_unit)
      s += fmt::format(" ({} a layer, {:.2f} MiB an expert)", mib(per_layer.begin()->second),
                       static_cast<double>(unit) / kMiB);
    if (host_total != dev_total) s += fmt::format("; {} as stored in the file", mib(host_total));
    return s;
  }

  // What a place holds, in words: what the rules put there, then what the
  // overrides did.
  std::string contents(int dev) const {
    std::vector<std::string> parts = describe_pieces(dev, false);
    std::vector<std::string> ov;
    for (const auto& pl : p_.placements)
      if (pl.device == dev && pl.rule == PlaceRule::override_tensor) ov.push_back(T()[pl.tensor].name);
    if (ov.size() > 3) ov = describe_pieces(dev, true);
    if (!ov.empty()) parts.push_back(fmt::format("by --override-tensor: {}", fmt::join(ov, ", ")));
    return parts.empty() ? "nothing" : fmt::format("{}", fmt::join(parts, ", "));
  }

  std::vector<std::string> describe_pieces(int dev, bool overridden) const {
    std::vector<std::string> parts;
    std::set<TensorKind> kinds;
    std::set<int> dense_layers;
    bool embedding = false, head = false, other_global = false;
    // Routed experts: per layer, the expert range at this place (the first stacked tensor's).
    std::map<int, std::pair<uint32_t, uint32_t>> ranges;
    std::map<int, uint32_t> n_of;
    for (const auto& pl : p_.placements) {
      if (pl.device != dev || (pl.rule == PlaceRule::override_tensor) != overridden) continue;
      const PlacementTensor& t = T()[pl.tensor];
      if (t.kind == TensorKind::routed_expert) {
        if (!ranges.count(t.layer)) {
          ranges[t.layer] = {pl.expert_begin, pl.expert_end};
          n_of[t.layer] = t.n_expert;
        }
      } else if (t.kind == TensorKind::embedding) {
        embedding = true;
      } else if (t.kind == TensorKind::output_head || (t.layer < 0 && t.kind == TensorKind::norm)) {
        head = true;
      } else if (t.layer < 0) {
        other_global = true;
      } else {
        dense_layers.insert(t.layer);
        kinds.insert(t.kind);
      }
    }
    if (embedding) parts.push_back("embedding");
    if (!dense_layers.empty()) {
      std::vector<std::string> k;
      if (kinds.count(TensorKind::attention)) k.push_back("attention");
      if (kinds.count(TensorKind::norm)) k.push_back("norms");
      if (kinds.count(TensorKind::router)) k.push_back("router");
      if (kinds.count(TensorKind::shared_expert)) k.push_back("shared expert");
      if (kinds.count(TensorKind::other)) k.push_back("HC mixers");
      parts.push_back(fmt::format("{} of {}", fmt::join(k, "+"),
                                  layers_text(std::vector<int>(dense_layers.begin(), dense_layers.end()))));
    }
    if (head) parts.push_back("output head");
    if (other_global) parts.push_back("other tensors outside the layers");
    // Layers with the same expert range together, in layer order.
    std::vector<std::pair<std::pair<uint32_t, uint32_t>, std::vector<int>>> by_range;
    for (const auto& [l, r] : ranges) {
      const auto key = r.first == 0 && r.second == n_of[l] ? std::pair<uint32_t, uint32_t>{0, 0} : r;
      auto it = std::find_if(by_range.begin(), by_range.end(), [&](const auto& x) { return x.first == key; });
      if (it == by_range.end())
        by_range.push_back({key, {l}});
      else
        it->second.push_back(l);
    }
    for (const auto& [r, ls] : by_range) {
      if (r.first == 0 && r.second == 0)
        parts.push_back(fmt::format("routed experts of {}", layers_text(ls)));
      else if (r.second - r.first == 1)
        parts.push_back(fmt::format("routed expert {} of {}", r.first, layers_text(ls)));
      else
        parts.push_back(fmt::format("routed experts {}-{} of {}", r.first, r.second - 1, layers_text(ls)));
    }
    return parts;
  }

  void describe() {
    auto& L = p_.lines;
    L.push_back(model_line());
    for (size_t k = 0; k < n_; ++k) {
      const DeviceBudget& d = p_.devices[k];
      L.push_back(fmt::format("{}{}: {} of {} usable ({} free - {} working room - {} scratch; {} left): {}",
                              device_label(d), d.name.empty() ? "" : fmt::format(" ({})", d.name), mib(used_[k]),
                              mib(room_[k]), mib(d.free_bytes), mib(d.reserve_bytes), mib(d.scratch_bytes),
                              mib(left(k)), contents(static_cast<int>(k))));
    }
    L.push_back(fmt::format("host: {}{}: {}", mib(p_.host_weight_bytes),
                            p_.host_budget ? fmt::format(" of {} usable", mib(*p_.host_budget))
                                           : std::string(" (host memory not checked)"),
                            contents(kHost)));
    for (size_t k = 0; k < opt_.overrides.size(); ++k) {
      const auto& o = opt_.overrides[k];
      uint64_t b = 0;
      std::vector<std::string> names;
      for (const auto& pl : p_.placements)
        if (pl.override_index == static_cast<int>(k)) {
          b += pl.bytes;
          if (names.size() < 3) names.push_back(T()[pl.tensor].name);
        }
      const std::string to = o.device == kHost ? "host memory" : fmt::format("cuda{}", o.device);
      if (override_hits_[k] == 0)
        L.push_back(fmt::format("why: --override-tensor '{}' matched no tensor", o.spec));
      else
        L.push_back(fmt::format("why: --override-tensor '{}' (checked before the other rules): {} tensor{} to {} ({}): "
                                "{}{}",
                                o.spec, override_hits_[k], override_hits_[k] == 1 ? "" : "s", to, mib(b),
                                fmt::join(names, ", "), override_hits_[k] > names.size() ? ", ..." : ""));
    }
    for (const auto& w : why_) L.push_back("why: " + w);
    uint64_t dev_sum = 0;
    for (uint64_t u : used_) dev_sum += u;
    L.push_back(fmt::format("total: {} on {} device{}, {} in host memory", mib(dev_sum), n_, n_ == 1 ? "" : "s",
                            mib(p_.host_weight_bytes)));
  }
};

}  // namespace

std::string_view tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::embedding: return "embedding";
    case TensorKind::attention: return "attention";
    case TensorKind::norm: return "norm";
    case TensorKind::router: return "router";
    case TensorKind::shared_expert: return "shared_expert";
    case TensorKind::routed_expert: return "routed_expert";
    case TensorKind::output_head: return "output_head";
    case TensorKind::other: return "other";
  }
  return "other";
}

std::string_view place_rule_name(PlaceRule r) {
  switch (r) {
    case PlaceRule::dense: return "dense";
    case PlaceRule::experts: return "experts";
    case PlaceRule::spill: return "spill";
    case PlaceRule::cpu_moe: return "cpu-moe";
    case PlaceRule::gpu_layers_experts: return "gpu-layers-experts";
    case PlaceRule::override_tensor: return "override-tensor";
    case PlaceRule::no_device: return "no-device";
  }
  return "?";
}

int tensor_layer(std::string_view n) {
  if (!n.starts_with("blk.")) return -1;
  n.remove_prefix(4);
  int v = 0;
  const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
  if (ec != std::errc() || end == n.data() || end == n.data() + n.size() || *end != '.' || v < 0) return -1;
  return v;
}

TensorKind tensor_kind(std::string_view n) {
  if (n == "token_embd.weight") return TensorKind::embedding;
  if (n == "output_norm.weight") return TensorKind::norm;
  if (n.starts_with("output.") || n.starts_with("output_hc_")) return TensorKind::output_head;
  if (tensor_layer(n) < 0) return TensorKind::other;
  const std::string_view s = n.substr(n.find('.', 4) + 1);  // after "blk.N."
  if (s.find("_exps.") != std::string_view::npos) return TensorKind::routed_expert;
  if (s.find("_shexp.") != std::string_view::npos) return TensorKind::shared_expert;
  if (s.starts_with("ffn_gate_inp.") || s.starts_with("exp_probs_b.") || s.starts_with("ffn_gate_tid2eid."))
    return TensorKind::router;
  if (s.ends_with("norm.weight")) return TensorKind::norm;
  if (s.starts_with("attn_") || s.starts_with("indexer")) return TensorKind::attention;
  return TensorKind::other;
}

std::vector<PlacementTensor> placement_tensors(const gguf::File& f, const DeviceBytes& device_bytes) {
  std::vector<PlacementTensor> v;
  v.reserve(f.tensors().size());
  for (const auto& t : f.tensors()) v.push_back(make_tensor(t.name, t.type, t.ne, t.nbytes, device_bytes));
  return v;
}

std::vector<PlacementTensor> placement_tensors(const ModelConfig& c, const std::string& recipe,
                                               const DeviceBytes& device_bytes) {
  std::vector<PlacementTensor> v;
  for (const TensorSpec& s : tensor_specs(c)) {
    if (!s.required) continue;  // as ds4 synth writes it
    const GgmlType type = s.role == TensorRole::tid2eid ? GgmlType::I32 : recipe_type(recipe, s.name, s.ne);
    v.push_back(make_tensor(s.name, type, s.ne, gguf::tensor_nbytes(type, s.ne), device_bytes));
  }
  return v;
}

uint64_t DeviceBudget::usable() const {
  const uint64_t take = reserve_bytes + scratch_bytes;
  return free_bytes > take ? free_bytes - take : 0;
}

int parse_device_name(std::string_view s) {
  std::string low(s);
  for (char& ch : low) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (low == "cpu" || low == "host") return kHost;
  if (low.starts_with("cuda") && low.size() > 4) {
    int v = 0;
    const char* b = low.data() + 4;
    const char* e = low.data() + low.size();
    const auto [end, ec] = std::from_chars(b, e, v);
    if (ec == std::errc() && end == e && v >= 0) return v;
  }
  fail("unknown device '{}' (expected cpu, host or cudaN, e.g. cuda0)", s);
}

TensorOverride parse_tensor_override(std::string_view spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == spec.size())
    fail("--override-tensor '{}': expected REGEX=DEVICE (DEVICE: cpu, host or cudaN)", spec);
  TensorOverride o;
  o.spec = std::string(spec);
  o.pattern = std::string(spec.substr(0, eq));
  try {
    o.device = parse_device_name(spec.substr(eq + 1));
  } catch (const Error& e) {
    fail("--override-tensor '{}': {}", spec, e.what());
  }
  try {
    o.re = std::regex(o.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("--override-tensor '{}': bad regular expression '{}': {}", spec, o.pattern, e.what());
  }
  return o;
}

std::vector<int> parse_device_ids(std::string_view list) {
  std::vector<int> v;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    const std::string_view item = list.substr(at, comma - at);
    int x = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), x);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || x < 0)
      fail("--gpus '{}': '{}' is not a device number (expected e.g. 0,1)", list, item);
    if (std::find(v.begin(), v.end(), x) != v.end()) fail("--gpus '{}': device {} is listed twice", list, x);
    v.push_back(x);
    at = comma + 1;
  }
  return v;
}

std::vector<uint64_t> parse_mib_list(std::string_view list, std::string_view flag) {
  std::vector<uint64_t> v;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    const std::string item(list.substr(at, comma - at));
    double x = 0;
    size_t used = 0;
    try {
      x = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !std::isfinite(x) || x < 0 || x > 1e12)
      fail("{} '{}': '{}' is not a size in MiB (expected e.g. 80552.2 or 81920,81920)", flag, list, item);
    v.push_back(static_cast<uint64_t>(std::llround(x * kMiB)));
    at = comma + 1;
  }
  return v;
}

std::string PlacementPlan::text() const { return fmt::format("{}\n", fmt::join(lines, "\n")); }

std::vector<int> PlacementPlan::places_of(std::string_view name, uint32_t expert) const {
  size_t idx = tensors.size();
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) idx = i;
  if (idx == tensors.size()) fail("placement: no tensor '{}' in the plan", name);
  std::vector<int> v;
  for (const auto& pl : placements) {
    if (pl.tensor != idx) continue;
    if (tensors[idx].stacked() && (expert < pl.expert_begin || expert >= pl.expert_end)) continue;
    v.push_back(pl.device);
  }
  std::sort(v.begin(), v.end());
  return v;
}

uint32_t PlacementPlan::experts_at(int layer, int device) const {
  size_t first = tensors.size();
  for (size_t i = 0; i < tensors.size() && first == tensors.size(); ++i)
    if (tensors[i].layer == layer && tensors[i].stacked()) first = i;
  uint32_t n = 0;
  for (const auto& pl : placements)
    if (pl.tensor == first && pl.device == device) n += pl.expert_end - pl.expert_begin;
  return n;
}

namespace {

bool any_expert_on_host(const PlacementPlan& p) {
  return std::any_of(p.placements.begin(), p.placements.end(), [&](const Placement& x) {
    return x.device == kHost && p.tensors[x.tensor].kind == TensorKind::routed_expert;
  });
}

// A plan that leaves routed experts in host memory costs each device its
// spill_bytes too (the CUDA backend sets its staging aside then): planned
// again with them taken, which can move more experts to the host, never
// fewer. A plan with every expert on the devices needs none.
PlacementPlan plan_with_spill(std::vector<PlacementTensor> tensors, std::vector<DeviceBudget> devices,
                              const PlacementOptions& opt) {
  const bool spill_room = std::any_of(devices.begin(), devices.end(), [](const DeviceBudget& d) { return d.spill_bytes; });
  if (!spill_room) return Planner(std::move(tensors), std::move(devices), opt).run();
  PlacementPlan p = Planner(tensors, devices, opt).run();
  if (!any_expert_on_host(p)) return p;
  const uint64_t most = std::max_element(devices.begin(), devices.end(), [](const auto& a, const auto& b) {
                          return a.spill_bytes < b.spill_bytes;
                        })->spill_bytes;
  for (DeviceBudget& d : devices) {
    d.scratch_bytes += d.spill_bytes;
    d.spill_bytes = 0;
  }
  p = Planner(std::move(tensors), std::move(devices), opt).run();
  p.lines.insert(p.lines.begin() + 1,
                 fmt::format("devices: {:.1f} MiB of each device set aside (in its scratch below) to stream the "
                             "host-resident experts in for prefill",
                             static_cast<double>(most) / (1024.0 * 1024.0)));
  return p;
}

}  // namespace

PlacementPlan plan_placement(std::vector<PlacementTensor> tensors, std::vector<DeviceBudget> devices,
                             const PlacementOptions& opt) {
  std::string auto_note;
  if (opt.auto_devices && devices.size() > 1) {
    PlacementOptions one = opt;
    one.auto_devices = false;
    std::optional<PlacementPlan> p;
    try {
      p = plan_with_spill(tensors, {devices[0]}, one);
    } catch (const Error&) {
      p.reset();  // an override names another device, or the dense parts need more: use every device
    }
    const bool spills =
        p && std::any_of(p->placements.begin(), p->placements.end(), [](const Placement& x) { return x.rule == PlaceRule::spill; });
    if (p && !spills) {
      p->lines.insert(p->lines.begin() + 1,
                      fmt::format("devices: the model fits cuda{} alone, so the other {} device{} are left out (--gpus "
                                  "picks devices)",
                                  devices[0].id, devices.size() - 1, devices.size() == 2 ? "" : "s"));
      return std::move(*p);
    }
    auto_note = fmt::format("devices: the model does not fit cuda{} alone, so all {} devices are used (--gpus picks "
                            "devices)",
                            devices[0].id, devices.size());
  }
  PlacementPlan p = plan_with_spill(std::move(tensors), std::move(devices), opt);
  if (!auto_note.empty()) p.lines.insert(p.lines.begin() + 1, auto_note);
  return p;
}

}  // namespace ds4::model
