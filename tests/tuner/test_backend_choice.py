"""`--backend auto` sends each VLM family where it runs: TRL for LLaVA / Idefics3 with a chat template, our loop for
everything else, PaliGemma included even when it has a chat template (TRL's trainers end in tracebacks on it);
`--backend trl` and `vrlhf dpo` refuse PaliGemma in one line, before any output is written."""

import json
import subprocess
import sys

import pytest

from tuner.config import TuneConfig
from tuner.trl_backend import uses_trl
from vrlhf.cli import main
from vrlhf.errors import ConfigError
from vrlhf.models import CHAT_TEMPLATE, TINY_TEXTS, tiny_checkpoint


def with_chat_template(path, end: str):
    """The tiny checkpoint at `path`, its processor given a chat template (as a user's fine-tuned PaliGemma may)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.chat_template = CHAT_TEMPLATE.replace("{{ END }}", end)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory):
    """A tiny PaliGemma WITH a chat template, its tokenizer knowing the shapes' words."""
    path = tiny_checkpoint("paligemma", tmp_path_factory.mktemp("paligemma") / "pg",
                           texts=list(TINY_TEXTS) + ["a red circle", "a blue square", "a green triangle"])
    return with_chat_template(path, "<eos>")


def test_auto_sends_each_family_where_it_runs(paligemma, tmp_path):
    llava = tiny_checkpoint("llava", tmp_path / "llava")
    bare_llava = tiny_checkpoint("llava", tmp_path / "bare-llava")
    (bare_llava / "chat_template.jinja").unlink()
    blip = tiny_checkpoint("blip", tmp_path / "blip")

    def backend(policy, choice="auto"):
        return "trl" if uses_trl(TuneConfig(policy=str(policy), backend=choice)) else "ours"

    assert backend(llava) == "trl"
    assert backend(paligemma) == "ours"  # has a chat template, and still not TRL's
    assert backend(bare_llava) == "ours"  # TRL needs conversational prompts: auto does not send it there to fail
    assert backend(blip) == "ours"
    assert backend(paligemma, "trl") == "trl" and backend(llava, "ours") == "ours"  # an explicit choice is kept


def test_default_tune_of_a_paligemma_with_a_chat_template_runs_our_loop(paligemma, shapes_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["tune", "--task", "captioning", "--policy", str(paligemma), "--data", str(shapes_dir),
                 "--out", str(out), "--k", "2", "--batch_size", "2", "--steps", "2", "--eval_every", "0",
                 "--save_every", "0", "--eval_size", "2", "--num_show", "0", "--max_new_tokens", "5",
                 "--log_with", "none"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert "adv_abs" in steps[0] and not any(k.startswith("trl/") for r in records for k in r)  # our loop's log
    from vrlhf.tasks import get_task

    assert get_task("captioning").load_policy(out / "final").family == "paligemma"


def test_trl_backend_refuses_paligemma_in_one_line(paligemma, shapes_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"paligemma model, which TRL's trainers do not run.*--backend ours"):
        from tuner.train import tune

        tune(TuneConfig(task="captioning", policy=str(paligemma), data=str(shapes_dir), out=str(out),
                        backend="trl", k=2, batch_size=2, steps=1, log_with="none"))
    assert not out.exists()


def test_dpo_refuses_paligemma_in_one_line(paligemma, shapes_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    assert main(["dpo", "--policy", str(paligemma), "--data", str(shapes_dir), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not paligemma" in error and "vrlhf train-reward" in error
    assert not out.exists()


def test_choosing_the_backend_does_not_import_trl(paligemma):
    """`from trl import ...` costs seconds: picking the backend (and refusing) must not pay it."""
    code = ("import sys; from tuner.config import TuneConfig; from tuner.trl_backend import uses_trl; "
            f"uses_trl(TuneConfig(policy={str(paligemma)!r})); print('trl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_trl_backend_refuses_a_kl_in_the_loss_that_rloo_would_fold_into_the_reward():
    from tuner.trl_backend import check_trl_config

    cfg = TuneConfig(kl_coef=0.1, kl_in="loss", baseline="loo")
    with pytest.raises(ConfigError, match="--kl_in loss: TRL's RLOO folds the KL into the reward"):
        check_trl_config(cfg)
    check_trl_config(TuneConfig(kl_coef=0.1, kl_in="loss", baseline="group_norm"))  # GRPO: the KL is in its loss
    check_trl_config(TuneConfig(kl_coef=0.1, baseline="loo"))
