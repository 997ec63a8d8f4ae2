"""clipbd.report.figures: the attacks x defenses matrix (ASR (CA) cells, average column)."""
import pandas as pd

from clipbd.report.figures import markdown, matrices
from clipbd.report.tables import STD_NOTE


def _row(attack, defense, shots, asr, ca, seed=0, defense_variant="default"):
    return {"dataset": "d", "attack": attack, "defense": defense, "shots": shots, "seed": seed,
            "asr": asr, "ca": ca, "attack_variant": "default", "defense_variant": defense_variant}


def test_matrix_cells_average_and_missing_runs():
    df = pd.DataFrame([
        _row("clean", "none", 0, None, 0.85),
        _row("a1", "none", 0, 1.0, 0.80), _row("a2", "none", 0, 0.90, 0.84),
        _row("a1", "rvpt", 16, 0.02, 0.82), _row("a1", "rvpt", 16, 0.04, 0.80, seed=1),
        _row("a2", "rvpt", 16, 0.00, 0.86),
        _row("a1", "lp", 16, 0.50, 0.70),  # lp x a2 absent
        _row("a2", "rvpt", 16, 0.99, 0.10, defense_variant="alpha~0"),  # a variant: not in the matrix
    ])
    (table,) = matrices(df)
    lines = table.strip().splitlines()
    assert lines[0] == "### d, 16 shots: ASR (CA) in %"
    assert lines[2] == "| defense | a1 | a2 | average |"
    assert lines[4] == "| none | 100.00 (80.00) | 90.00 (84.00) | 95.00 (82.00) |"
    assert lines[5] == "| lp | 50.00 (70.00) | — | — |"
    # rvpt x a1 is the mean over two seeds: ASR 3% ± 1.41 (sample std), CA 81% ± 1.41
    assert lines[6] == "| rvpt | 3.00 ± 1.41 (81.00 ± 1.41), n=2 | 0.00 (86.00) | 1.50 (83.50) |"
    assert len(lines) == 7


def test_markdown_rows_over_one_and_three_seeds():
    one = [_row("clean", "none", 0, None, 0.85), _row("a1", "none", 0, 1.0, 0.80)]
    text = markdown(pd.DataFrame(one))
    assert text.splitlines()[2:4] == ["| d | a1 | none | 0 | 100.00 (80.00) | — |",
                                      "| d | clean | none | 0 | — (85.00) | — |"]
    assert STD_NOTE not in text
    three = one + [_row("a1", "rvpt", 16, asr, ca, seed=s)
                   for s, (asr, ca) in enumerate([(0.1, 0.8), (0.2, 0.82), (0.3, 0.84)])]
    text = markdown(pd.DataFrame(three))
    assert text.splitlines()[3] == "| d | a1 | rvpt | 16 | 20.00 ± 10.00 (82.00 ± 2.00), n=3 | — |"
    assert f"\n{STD_NOTE}\n" in text


def test_figures_name_their_error_bars_only_over_several_seeds(tmp_path):
    from clipbd.report.figures import overview
    from clipbd.report.tables import seeds_note

    one = pd.DataFrame([_row("a1", "none", 0, 1.0, 0.80), _row("a1", "rvpt", 16, 0.1, 0.8)])
    three = pd.DataFrame([_row("a1", "rvpt", 16, 0.1 * s, 0.8, seed=s) for s in range(3)])
    assert seeds_note(one) is None
    assert seeds_note(three) == "mean ± sample std (ddof=1) over n=3 seeds"
    overview(three, str(tmp_path / "o.png"), str(tmp_path / "o.pdf"))
    assert (tmp_path / "o.png").stat().st_size > 0
