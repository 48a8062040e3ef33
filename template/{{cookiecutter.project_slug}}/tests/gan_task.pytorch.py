"""A two-optimizer task (a small GAN), written as ``trainers/<task>_trainer.py`` would be.

It shows the plain flavour's loop with two models, two optimizers, an LR
scheduler and a per-sample Dataset with augmentation (``gan_data.py``) read
by worker processes, all restored exactly by :class:`TrainState`. The tests train, interrupt and resume
it; copy it over a task's trainer to start a GAN of your own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protocol import Run
from protocol.state import TrainState
from tests.gan_data import Ring
from trainers.base_trainer import select_device, to_device
from utils.dataset import make_loader
from utils.utils import seed_everything

LATENT = 4


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, outputs))


@torch.no_grad()
def ring_gap(generator: nn.Module, device: torch.device) -> float:
    """How far generated points lie from the unit circle, on fixed noise: lower is better."""
    noise = torch.randn(256, LATENT, generator=torch.Generator().manual_seed(0)).to(device)
    return (generator(noise).norm(dim=1) - 1).abs().mean().item()


def train(run: Run) -> dict[str, float]:
    args = run.args
    device = select_device(args.device)
    seed_everything(args.seed)
    generator = mlp(LATENT, args.hidden_size, 2).to(device)
    critic = mlp(2, args.hidden_size, 1).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.learning_rate, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, betas=(0.5, 0.999))
    schedule_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=20, gamma=0.8)
    loader = make_loader(
        Ring(args.seed), args.batch_size, shuffle=True, seed=args.seed, num_workers=args.num_workers
    )

    saved = {
        "generator": generator,
        "critic": critic,
        "opt_g": opt_g,
        "opt_d": opt_d,
        "schedule_g": schedule_g,
        "loader": loader,
    }
    with TrainState(run, saved, main_metric="val_gap", mode="min", checkpoint_interval=0) as state:
        while state.epoch < args.epochs:
            loader.set_epoch(state.epoch)
            for real in loader:
                real = to_device(real, device)
                fake = generator(torch.randn(len(real), LATENT, device=device))
                ones, zeros = (
                    torch.ones(len(real), 1, device=device),
                    torch.zeros(len(real), 1, device=device),
                )
                # the critic's step, on real points and detached fakes
                loss_d = F.binary_cross_entropy_with_logits(critic(real), ones)
                loss_d = loss_d + F.binary_cross_entropy_with_logits(critic(fake.detach()), zeros)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # the generator's step, through the updated critic
                loss_g = F.binary_cross_entropy_with_logits(critic(fake), ones)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                schedule_g.step()
                state.step(loss_d=loss_d, loss_g=loss_g)
            state.end_epoch({"val_gap": ring_gap(generator, device)})
        return state.final_metrics()
