"""Sample-level DP-SGD with Opacus: the accountant persists across rounds."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from opacus.accountants import RDPAccountant  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from oneliac_flwr.errors import PrivacyError  # noqa: E402
from oneliac_flwr.privacy import DpSgdSteps  # noqa: E402
from oneliac_flwr.privacy.dpsgd import (  # noqa: E402
    accountant_state,
    calibrate_dpsgd_noise,
    flatten_history,
    history_events,
    make_private,
    sample_level_epsilon,
    unflatten_history,
    would_exceed_budget,
)

DELTA = 1e-5
Z = 1.1
BATCH = 10
N = 200


def _train_one_round(history: list | None) -> tuple[list, float]:
    """One federated round: fresh model wrapper and engine, one local epoch."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(N, 5, generator=generator)
    labels = (features[:, 0] > 0).long()
    model = torch.nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(features, labels), batch_size=BATCH)
    private = make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=Z,
        max_grad_norm=1.0,
        history=history,
        noise_generator=torch.Generator().manual_seed(1),
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    for x, y in private.data_loader:
        private.optimizer.zero_grad()
        loss_fn(private.module(x), y).backward()
        private.optimizer.step()
    return accountant_state(private.engine), private.engine.get_epsilon(DELTA)


def test_epsilon_accumulates_over_rounds_and_matches_a_fresh_opacus_accountant() -> None:
    history: list | None = None
    epsilons = []
    for _ in range(3):
        history, engine_epsilon = _train_one_round(history)
        epsilons.append(engine_epsilon)
    assert epsilons[0] < epsilons[1] < epsilons[2]
    rate = BATCH / N
    steps_per_round = N // BATCH
    assert history == [(Z, rate, 3 * steps_per_round)]

    fresh = RDPAccountant()
    fresh.history = [(Z, rate, 3 * steps_per_round)]
    expected = fresh.get_epsilon(DELTA)
    assert sample_level_epsilon(history, DELTA, accountant="rdp") == pytest.approx(expected, rel=1e-12)
    assert epsilons[-1] == pytest.approx(expected, rel=1e-12)
    # Budget decisions use our PLD accountant, not the engine's RDP figure (tighter).
    assert sample_level_epsilon(history, DELTA) < 0.95 * epsilons[-1]
    # A fresh engine every round (Flower's example) reports one round only: the first value.
    assert epsilons[-1] > 1.2 * epsilons[0]


def test_history_survives_a_flat_record_and_json() -> None:
    history = [(1.1, 0.25, 4), (0.9, 0.1, 30)]
    assert unflatten_history(flatten_history(history)) == history
    assert history_events(history) == [DpSgdSteps(1.1, 0.25, 4), DpSgdSteps(0.9, 0.1, 30)]
    with pytest.raises(ValueError, match="multiple of 3"):
        unflatten_history([1.0, 0.1])


def test_pld_sample_level_epsilon_is_tighter_than_opacus_rdp() -> None:
    history = [(1.0, 0.02, 500)]
    assert sample_level_epsilon(history, DELTA) < sample_level_epsilon(history, DELTA, accountant="rdp")


def test_budget_check_for_the_next_round() -> None:
    history = [(Z, 0.05, 60)]
    after_60 = sample_level_epsilon(history, DELTA)
    after_80 = sample_level_epsilon([(Z, 0.05, 80)], DELTA)
    next_round = DpSgdSteps(Z, 0.05, 20)
    assert would_exceed_budget(history, next_round, 0.5 * (after_60 + after_80), DELTA)
    assert not would_exceed_budget(history, next_round, after_80 * 1.001, DELTA)
    assert not would_exceed_budget(history, [(Z, 0.05, 20)], after_80 * 1.001, DELTA)


def test_calibrated_dpsgd_noise_spends_at_most_the_budget() -> None:
    z = calibrate_dpsgd_noise(epsilon=3.0, delta=DELTA, sample_rate=0.01, steps=1000)
    spent = sample_level_epsilon([(z, 0.01, 1000)], DELTA)
    assert 0.99 * 3.0 <= spent <= 3.0
    z_rdp = calibrate_dpsgd_noise(epsilon=3.0, delta=DELTA, sample_rate=0.01, steps=1000, accountant="rdp")
    assert 3.0 - 0.01 <= sample_level_epsilon([(z_rdp, 0.01, 1000)], DELTA, accountant="rdp") <= 3.0
    assert z < z_rdp  # PLD certifies the same budget with less noise


SMALL_RATE = 32 / 120  # batch 32 of 120 records
SMALL_STEPS = 10 * 4  # 10 rounds x 4 steps


def test_epsilon_0_1_is_certified_by_the_pld_accountant() -> None:
    z = calibrate_dpsgd_noise(epsilon=0.1, delta=DELTA, sample_rate=SMALL_RATE, steps=SMALL_STEPS)
    assert math.isfinite(z)
    assert z == pytest.approx(52.04, rel=0.01)
    spent = sample_level_epsilon([(z, SMALL_RATE, SMALL_STEPS)], DELTA)
    assert 0.098 <= spent <= 0.1
    # Round 10 fits, an 11th round does not.
    history = [(z, SMALL_RATE, SMALL_STEPS - 4)]
    assert not would_exceed_budget(history, DpSgdSteps(z, SMALL_RATE, 4), 0.1, DELTA)
    assert would_exceed_budget([(z, SMALL_RATE, SMALL_STEPS)], DpSgdSteps(z, SMALL_RATE, 4), 0.1, DELTA)


def test_rdp_cross_check_cannot_certify_epsilon_0_1() -> None:
    z = calibrate_dpsgd_noise(epsilon=0.1, delta=DELTA, sample_rate=SMALL_RATE, steps=SMALL_STEPS)
    assert sample_level_epsilon([(z, SMALL_RATE, SMALL_STEPS)], DELTA, accountant="rdp") > 0.1
    with pytest.raises(PrivacyError, match="epsilon"):
        calibrate_dpsgd_noise(
            epsilon=0.1, delta=DELTA, sample_rate=SMALL_RATE, steps=SMALL_STEPS, accountant="rdp"
        )
    with pytest.raises(ValueError, match="accountant: must be 'pld' or 'rdp'"):
        sample_level_epsilon([(z, SMALL_RATE, 4)], DELTA, accountant="prv")


def _one_private_epoch(**generators: object) -> tuple[list[list[int]], torch.Tensor]:
    """Batches drawn (record indices) and the weights after one epoch from zero, no signal."""
    torch.manual_seed(0)  # a public seed must not fix the draws
    indices = torch.arange(60, dtype=torch.float32).unsqueeze(1)
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(indices), batch_size=6)
    private = make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        **generators,  # type: ignore[arg-type]
    )
    batches = []
    for (x,) in private.data_loader:
        batches.append(sorted(int(v) for v in x.flatten()))
        private.optimizer.zero_grad()
        (0.0 * private.module(x)).sum().backward()  # zero gradient: the step is pure noise
        private.optimizer.step()
    return batches, model.weight.detach().clone()


def test_default_generators_come_from_os_entropy_even_with_a_fixed_torch_seed() -> None:
    first_batches, first_weight = _one_private_epoch()
    second_batches, second_weight = _one_private_epoch()
    assert first_batches != second_batches
    assert not torch.equal(first_weight, second_weight)
    assert first_weight.abs().sum() > 0  # noise was added


def test_given_generators_drive_both_the_sampling_and_the_noise() -> None:
    def seeded() -> dict[str, object]:
        return {
            "noise_generator": torch.Generator().manual_seed(11),
            "sampler_generator": torch.Generator().manual_seed(12),
        }

    first_batches, first_weight = _one_private_epoch(**seeded())
    second_batches, second_weight = _one_private_epoch(**seeded())
    assert first_batches == second_batches
    assert torch.equal(first_weight, second_weight)
    other_batches, _ = _one_private_epoch(
        noise_generator=torch.Generator().manual_seed(11), sampler_generator=torch.Generator().manual_seed(13)
    )
    assert other_batches != first_batches


def test_secure_mode_refuses_generators() -> None:
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="secure_mode"):
        make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            secure_mode=True,
            noise_generator=torch.Generator(),
        )


def test_accountant_state_requires_rdp() -> None:
    class Engine:
        class accountant:  # noqa: N801 - mimics an Opacus attribute
            history: ClassVar[list] = []

            @staticmethod
            def mechanism() -> str:
                return "prv"

    with pytest.raises(PrivacyError, match="rdp"):
        accountant_state(Engine())


def test_bad_history_entries_are_rejected() -> None:
    with pytest.raises(ValueError, match="sample_rate: must be in"):
        sample_level_epsilon([(1.0, 1.5, 3)], DELTA)
    with pytest.raises(ValueError, match=r"history\[0\]"):
        sample_level_epsilon([(1.0, 0.5)], DELTA)
