// The one table of models `ds4 pull` knows by name. Files and repository are
// those of antirez/ds4's download script (docs/model-download.md); the
// file names spell the quantization recipe.
#include "download/download.h"

namespace ds4::download {

namespace {
constexpr std::string_view kRepo = "antirez/deepseek-v4-gguf";
constexpr KnownModel kModels[] = {
    {"q2-imatrix", kRepo, "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf",
     "2-bit experts, imatrix (about 81 GB; 96-128 GB RAM machines)", true},
    {"q4-imatrix", kRepo,
     "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf",
     "4-bit experts, imatrix (about 153 GB; 256 GB RAM or more)", true},
    {"q2", kRepo, "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf",
     "2-bit experts, without imatrix (legacy)", true},
    {"q4", kRepo, "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf",
     "4-bit experts, without imatrix (legacy)", true},
    {"mtp", kRepo, "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf",
     "multi-token-prediction draft weights (about 3.5 GB; not a model on its own)", false},
};
}  // namespace

std::span<const KnownModel> known_models() { return kModels; }

std::string known_model_url(const KnownModel& m) {
  return "https://huggingface.co/" + std::string(m.repo) + "/resolve/main/" + std::string(m.file);
}

}  // namespace ds4::download
