"""The development-split target check: paired margins, missing seeds, k-falls."""

from __future__ import annotations

from research.target import check_target, format_target


def _row(model: str, k: int, seed: int, value: float, variant: str = "", dataset: str = "d") -> dict[str, str]:
    metrics = {"image_auroc": value, "pixel_auroc": value, "aupro": value}
    return {"model": model, "variant": variant, "dataset": dataset, "k_shot": str(k), "seed": str(seed),
            "status": "ok", **{name: str(v) for name, v in metrics.items()}}  # fmt: skip


def test_margin_is_the_larger_of_floor_and_paired_standard_error():
    base = [_row("Base", 1, s, 0.90) for s in range(3)]
    # differences -0.004, -0.004, -0.004: SE 0, margin = floor 0.005 -> met
    close = [_row("M", 1, s, 0.896, "v") for s in range(3)]
    cells, _ = check_target(base + close, "M", "v", "Base", k_shots=[1], seeds=[0, 1, 2])
    assert all(cell.met for cell in cells) and cells[0].margin == 0.005
    # differences -0.006 each: beyond the floor, SE 0 -> not met
    below = [_row("M", 1, s, 0.894, "v") for s in range(3)]
    cells, _ = check_target(base + below, "M", "v", "Base", k_shots=[1], seeds=[0, 1, 2])
    assert not any(cell.met for cell in cells)
    # noisy differences -0.03, +0.01, -0.01 (mean -0.01, SE 0.0115) -> met by the standard error
    noisy = [_row("M", 1, s, 0.90 + d, "v") for s, d in enumerate((-0.03, 0.01, -0.01))]
    cells, _ = check_target(base + noisy, "M", "v", "Base", k_shots=[1], seeds=[0, 1, 2])
    assert cells[0].met and abs(cells[0].margin - 0.011547) < 1e-5


def test_missing_seed_is_missing_never_met():
    rows = [_row("Base", 1, s, 0.5) for s in range(3)] + [_row("M", 1, s, 0.9, "v") for s in range(2)]
    cells, falls = check_target(rows, "M", "v", "Base", k_shots=[1, 4], seeds=[0, 1, 2])
    assert all(cell.met is None for cell in cells)
    assert all(fall.met is None for fall in falls)
    assert "Overall: missing rows" in format_target(cells, falls, "M", "v", "Base")


def test_k_fall_allowed_up_to_the_larger_seed_std():
    base = [_row("Base", k, s, 0.5) for k in (1, 4) for s in range(3)]
    k1 = [_row("M", 1, s, v, "v") for s, v in enumerate((0.90, 0.92, 0.94))]  # std 0.02
    small = [_row("M", 4, s, v, "v") for s, v in enumerate((0.895, 0.905, 0.915))]  # fall 0.015 <= 0.02
    _, falls = check_target(base + k1 + small, "M", "v", "Base", k_shots=[1, 4], seeds=[0, 1, 2])
    assert all(fall.met for fall in falls)
    large = [_row("M", 4, s, v, "v") for s, v in enumerate((0.87, 0.88, 0.89))]  # fall 0.04 > 0.02
    cells, falls = check_target(base + k1 + large, "M", "v", "Base", k_shots=[1, 4], seeds=[0, 1, 2])
    assert not any(fall.met for fall in falls)
    assert "Overall: not met" in format_target(cells, falls, "M", "v", "Base")


def test_command_reads_several_results_files_together(tmp_path, capsys):
    from anomalib_fewshot.benchmark.store import write_rows
    from research.target import main

    write_rows(tmp_path / "grid.csv", [_row("Base", 1, s, 0.90) for s in range(3)])
    write_rows(tmp_path / "rescored.csv", [_row("M", 1, s, 0.95, "v-x") for s in range(3)])
    main([str(tmp_path / "grid.csv"), str(tmp_path / "rescored.csv"), "--model", "M", "--variant", "v-x",
          "--baseline", "Base", "--k-shot", "1"])  # fmt: skip
    assert "| d | 1 | image_auroc | 0.950 | 0.900 | +0.050 | 0.005 | met |" in capsys.readouterr().out
