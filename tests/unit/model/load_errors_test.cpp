// A converted tiny model loads; every kind of bad file fails at load with one
// ds4::Error naming what is wrong.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "gguf/gguf.h"
#include "model/convert.h"
#include "model/weights.h"
#include "util/error.h"

namespace ds4::model {
namespace {

namespace fs = std::filesystem;

class LoadErrors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ds4_model_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    ConvertOptions o;
    o.hf_dir = std::string(DS4_SOURCE_DIR) + "/tests/fixtures/hf/tiny";
    o.output = (dir_ / "tiny.gguf").string();
    o.recipe = "f16";
    convert(o);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // Rewrites the good file through `edit_meta` / `edit_tensor` (return false to drop a tensor).
  static std::string rewrite(const std::string& name,
                             const std::function<void(std::vector<std::pair<std::string, gguf::Value>>&)>& edit_meta,
                             const std::function<bool(gguf::TensorInfo&, std::vector<uint8_t>&)>& edit_tensor) {
    gguf::File f = gguf::File::open((dir_ / "tiny.gguf").string());
    auto meta = f.metadata();
    if (edit_meta) edit_meta(meta);
    gguf::Writer w;
    for (auto& [k, v] : meta) w.set(k, v);
    for (const auto& t : f.tensors()) {
      gguf::TensorInfo info = t;
      std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
      if (edit_tensor && !edit_tensor(info, bytes)) continue;
      w.add_tensor(info.name, info.type, info.ne, bytes);
    }
    const std::string path = (dir_ / name).string();
    w.write(path);
    return path;
  }

  static void expect_load_error(const std::string& path, std::initializer_list<std::string> needles) {
    try {
      Model::load(path);
      FAIL() << "load succeeded; expected an error mentioning " << *needles.begin();
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
    }
  }

  static fs::path dir_;
};
fs::path LoadErrors::dir_;

TEST_F(LoadErrors, GoodFileLoadsWithConfigFromMetadata) {
  auto m = Model::load((dir_ / "tiny.gguf").string());
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.n_layer, 4u);
  EXPECT_EQ(c.n_embd, 256u);
  EXPECT_EQ(c.head_dim, 64u);
  EXPECT_EQ(c.rope_dim, 16u);
  EXPECT_EQ(c.n_hash_layers, 2u);
  EXPECT_EQ(c.compress_ratios, (std::vector<uint32_t>{0, 4, 16, 4}));
  EXPECT_EQ(c.kind(0), AttentionKind::sliding);
  EXPECT_EQ(c.kind(1), AttentionKind::csa);
  EXPECT_EQ(c.kind(2), AttentionKind::hca);
  EXPECT_FLOAT_EQ(c.expert_weights_scale, 1.5f);
  EXPECT_FLOAT_EQ(c.yarn_factor, 16.0f);
  EXPECT_EQ(c.yarn_orig_ctx, 65536u);
  EXPECT_TRUE(m->weights.layers[1].indexer_q_b.present());
  EXPECT_FALSE(m->weights.layers[2].indexer_q_b.present());
  EXPECT_TRUE(m->weights.layers[0].tid2eid.present());
  EXPECT_FALSE(m->weights.layers[2].tid2eid.present());
  EXPECT_EQ(m->weights.layers[2].gate_exps.type, GgmlType::F16);
}

TEST_F(LoadErrors, MissingTensor) {
  auto p = rewrite("missing.gguf", nullptr, [](gguf::TensorInfo& t, std::vector<uint8_t>&) {
    return t.name != "blk.1.indexer_compressor_gate.weight";
  });
  expect_load_error(p, {"missing tensor", "blk.1.indexer_compressor_gate.weight"});
}

TEST_F(LoadErrors, WrongShape) {
  auto p = rewrite("shape.gguf", nullptr, [](gguf::TensorInfo& t, std::vector<uint8_t>&) {
    if (t.name == "blk.2.attn_kv.weight") t.ne = {128, 128};  // same bytes, wrong shape
    return true;
  });
  expect_load_error(p, {"blk.2.attn_kv.weight", "[128, 128]", "[256, 64]"});
}

TEST_F(LoadErrors, UnsupportedType) {
  auto p = rewrite("type.gguf", nullptr, [](gguf::TensorInfo& t, std::vector<uint8_t>& b) {
    if (t.name == "blk.0.attn_q_a.weight") {
      t.type = GgmlType::I16;  // a valid GGUF type no weight may have
      b.resize(static_cast<size_t>(t.n_elements()) * 2);
    }
    return true;
  });
  expect_load_error(p, {"blk.0.attn_q_a.weight", "I16"});
}

TEST_F(LoadErrors, WrongTypeForTokenTable) {
  auto p = rewrite("tid.gguf", nullptr, [](gguf::TensorInfo& t, std::vector<uint8_t>&) {
    if (t.name == "blk.0.ffn_gate_tid2eid.weight") t.type = GgmlType::F32;
    return true;
  });
  expect_load_error(p, {"blk.0.ffn_gate_tid2eid.weight", "expected I32"});
}

TEST_F(LoadErrors, ExpertIdOutOfRange) {
  auto p = rewrite("eid.gguf", nullptr, [](gguf::TensorInfo& t, std::vector<uint8_t>& b) {
    if (t.name == "blk.1.ffn_gate_tid2eid.weight") b[4 * 10] = 99;
    return true;
  });
  expect_load_error(p, {"blk.1.ffn_gate_tid2eid.weight", "99", "expert"});
}

TEST_F(LoadErrors, MissingKey) {
  auto p = rewrite("nokey.gguf", [](auto& meta) {
    std::erase_if(meta, [](auto& kv) { return kv.first == "deepseek4.attention.q_lora_rank"; });
  }, nullptr);
  expect_load_error(p, {"missing required key", "deepseek4.attention.q_lora_rank"});
}

TEST_F(LoadErrors, InconsistentMetadata) {
  auto p = rewrite("groups.gguf", [](auto& meta) {
    for (auto& [k, v] : meta)
      if (k == "deepseek4.attention.output_group_count") v = gguf::Value::u32(3);  // 4 heads, 3 groups
  }, nullptr);
  expect_load_error(p, {"head_count must be a multiple of", "output_group_count"});
}

TEST_F(LoadErrors, ShortCompressRatios) {
  auto p = rewrite("ratios.gguf", [](auto& meta) {
    for (auto& [k, v] : meta)
      if (k == "deepseek4.attention.compress_ratios") v = gguf::Value::u32_array({0, 4});
  }, nullptr);
  expect_load_error(p, {"deepseek4.attention.compress_ratios", "2 entries", "block_count is 4"});
}

TEST_F(LoadErrors, WrongArchitecture) {
  auto p = rewrite("arch.gguf", [](auto& meta) {
    for (auto& [k, v] : meta)
      if (k == "general.architecture") v = gguf::Value::str("llama");
  }, nullptr);
  expect_load_error(p, {"general.architecture", "llama"});
}

TEST_F(LoadErrors, KeyWithWrongType) {
  auto p = rewrite("ktype.gguf", [](auto& meta) {
    for (auto& [k, v] : meta)
      if (k == "deepseek4.block_count") v = gguf::Value::str("four");
  }, nullptr);
  expect_load_error(p, {"deepseek4.block_count", "integer"});
}

TEST_F(LoadErrors, AcceptsLlamaCppSpellings) {
  auto p = rewrite("llamacpp.gguf", [](auto& meta) {
    for (auto& [k, v] : meta)
      if (k == "deepseek4.hyper_connection.sinkhorn_iterations") k = "deepseek4.hyper_connection.sinkhorn_iters";
  }, nullptr);
  EXPECT_EQ(Model::load(p)->config.sinkhorn_iters, 20u);
}

}  // namespace
}  // namespace ds4::model
