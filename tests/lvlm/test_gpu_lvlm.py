"""The LVLM critic on CUDA: a tiny model of each family in bf16 critiques through the real path."""

import pytest
import torch

from lvlmva_desktop.core.method.critic import VERDICTS, CritiqueRequest
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
from lvlmva_desktop.lvlm.local import LocalBackend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _req(i):
    g = torch.Generator().manual_seed(i)
    seg = torch.zeros(32, 32, dtype=torch.long)
    seg[:, 16:] = 1
    return CritiqueRequest(i, torch.rand(3, 32, 32, generator=g), 0, "a", "the blob", torch.rand(32, 32, generator=g),
                           seg, [0.6, 0.4])  # fmt: skip


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3", "llava", "gemma3"])
def test_batched_critique_on_cuda_in_bf16(family, tiny_lvlm_dirs):
    be = LocalBackend(tiny_lvlm_dirs[family], device="cuda")
    assert be.identity()["dtype"] == "bfloat16" and be.identity()["device"].startswith("cuda")
    settings = CriticSettings(
        use_cache=False, critic_max_new_tokens=32, judge_max_new_tokens=32, batch_size=4
    )
    crits = list(LVLMCritic(be, settings=settings).critique([_req(i) for i in range(6)]))
    assert len(crits) == 6 and all(len(c.verdicts) == 2 for c in crits)
    assert all(v.verdict in VERDICTS for c in crits for v in c.verdicts)
    be.close()
