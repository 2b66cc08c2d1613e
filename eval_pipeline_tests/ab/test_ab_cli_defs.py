"""`eval-pipeline ab` and the prompt_ab_test Dagster asset, end to end on the demo app."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.cli import build_parser, main
from eval_pipeline.core import store
from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.ab.run import ABSpec
from eval_pipeline.core.regression.runners import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT
from eval_pipeline.defs import ab as ab_defs
from eval_pipeline.defs.resources import EvalStore, JudgeResource

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "data" / "ab" / "cases.jsonl"
GOOD = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_good.txt"
REGRESSED = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_regressed.txt"


def test_cli_prints_the_verdict_with_its_evidence_and_stores_it(capsys, tmp_path):
    md = tmp_path / "ab.md"
    code = main(
        ["ab", "--cases", str(CASES), "--a-prompt", str(GOOD), "--b-prompt", str(REGRESSED),
         "--pairwise", "--markdown", str(md)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "B (prompt_regressed.txt) vs A (prompt_good.txt): A WINS" in out
    for needle in ("n=36", "mean A 4.94", "delta -1.33", "95% CI", "paired t-test p=",
                   "Wilcoxon signed-rank p=", "d_z=", "floor 0.20", "largest changes",
                   "position consistency"):  # fmt: skip
        assert needle in out
    # The judge has no labels: the report says so prominently, the verdict stands.
    assert "judge heuristic||heuristic-v2: unvalidated (0 labels;" in out
    assert "WARNING: UNVALIDATED JUDGE" in out
    assert "A/B verdict: **A wins**" in md.read_text()
    assert "> ⚠️ **WARNING: UNVALIDATED JUDGE" in md.read_text()
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        assert conn.execute("SELECT verdict FROM ab_runs").fetchall() == [(ab_stats.A_WINS,)]


def test_cli_same_prompt_twice_is_no_significant_difference(capsys):
    code = main(["ab", "--cases", str(CASES), "--a-prompt", str(GOOD), "--b-prompt", str(GOOD),
                 "--no-store"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "NO SIGNIFICANT DIFFERENCE" in out
    assert "judge trust: not looked up (no store)" in out


def test_cli_refuses_bad_input_with_exit_3(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert main(["ab", "--cases", str(bad), "--a-prompt", str(GOOD), "--b-prompt", str(GOOD)]) == 3
    assert "bad case file" in capsys.readouterr().err
    assert main(["ab", "--cases", str(CASES), "--a-prompt", str(GOOD)]) == 3
    both = ["ab", "--cases", str(CASES), "--a-prompt", str(GOOD), "--b-prompt", str(GOOD),
            "--a-target", "x:y", "--b-target", "x:z"]  # fmt: skip
    assert main(both) == 3
    assert "not both" in capsys.readouterr().err


def test_asset_materializes_with_markdown_and_rows():
    result = dg.materialize(
        [ab_defs.prompt_ab_test],
        resources={"store": EvalStore(), "judge": JudgeResource()},
        run_config=dg.RunConfig(
            {"prompt_ab_test": ab_defs.ABTestConfig(cases_path=str(CASES), pairwise=True)}
        ),
    )
    assert result.success
    meta = result.asset_materializations_for_node("prompt_ab_test")[0].metadata
    assert meta["verdict"].value == ab_stats.A_WINS
    assert meta["scores/n"].value == 36
    assert meta["scores/t_test_p"].value < 0.05
    assert "Largest changes" in meta["report"].value
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM ab_case_scores").fetchone()[0] == 72


def test_asset_is_in_the_code_location_with_the_duckdb_pool():
    from eval_pipeline.definitions import defs

    graph = defs().resolve_asset_graph()
    node = graph.get(dg.AssetKey("prompt_ab_test"))
    assert node.group_name == "ab"
    assert node.pools == {"duckdb"}


def test_cli_and_asset_build_the_same_spec_with_the_same_defaults():
    args = build_parser().parse_args(
        ["ab", "--cases", str(CASES), "--a-prompt", str(GOOD), "--b-prompt", str(REGRESSED)]
    )
    from_cli = ABSpec.from_options(vars(args))
    from_asset = ab_defs.spec_from_config(
        ab_defs.ABTestConfig(cases_path=str(CASES), a_prompt=str(GOOD), b_prompt=str(REGRESSED))
    )
    assert from_cli == from_asset
    assert (from_cli.concurrency, from_cli.timeout) == (DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT)
    flags = ["--prompt", "c.txt", "--top", "3", "--seed", "7", "--timeout", "5", "--pairwise"]
    args = build_parser().parse_args(["ab", "--cases", "x.jsonl", *flags])
    config = ab_defs.ABTestConfig(
        cases_path="x.jsonl", other_prompts=["c.txt"], top_changes=3, seed=7, timeout=5,
        pairwise=True,
    )  # fmt: skip
    assert ABSpec.from_options(vars(args)) == ABSpec.from_options(config.model_dump())


def test_asset_falls_back_to_the_demo_cases_and_prompts(monkeypatch):
    monkeypatch.delenv("EVAL_AB_CASES", raising=False)
    spec = ab_defs.spec_from_config(ab_defs.ABTestConfig())
    assert spec.cases_path == str(ab_defs.DEMO_CASES)
    assert Path(spec.a_prompt).name == "prompt_good.txt"
    assert Path(spec.b_prompt).name == "prompt_regressed.txt"
    runners = ab_defs.spec_from_config(ab_defs.ABTestConfig(a_target="m:a", b_target="m:b"))
    assert runners.a_prompt is None and runners.targets == ["m:a", "m:b"]
