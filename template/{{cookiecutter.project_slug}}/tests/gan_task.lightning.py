"""A two-optimizer task (a small GAN), written as ``trainers/<task>_trainer.py`` would be.

It shows manual optimization in Lightning: two models, two optimizers, an LR
scheduler, and a per-sample Dataset with augmentation (``gan_data.py``) read
by worker processes, all restored exactly from ``last.ckpt``. The tests train, interrupt and resume it;
copy it over a task's trainer to start a GAN of your own.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from protocol import Run
from protocol.lightning import epoch_to_train
from tests.gan_data import Ring
from trainers.base_trainer import fit
from utils.dataset import TensorSamples, make_loader
from utils.utils import seed_everything

LATENT = 4


class RingData(pl.LightningDataModule):
    def __init__(self, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return make_loader(
            Ring(self.seed),
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
            epoch=epoch_to_train(self.trainer),  # a resumed run's, too
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        noise = torch.randn(256, LATENT, generator=torch.Generator().manual_seed(0))  # fixed noise
        return make_loader(TensorSamples(noise), 256, shuffle=False, seed=self.seed)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, outputs))


class Gan(pl.LightningModule):
    def __init__(self, hidden_size: int, learning_rate: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped in training_step
        self.learning_rate = learning_rate
        self.generator = mlp(LATENT, hidden_size, 2)
        self.critic = mlp(2, hidden_size, 1)

    def training_step(self, real: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(len(real), LATENT, device=self.device))
        ones, zeros = torch.ones_like(real[:, :1]), torch.zeros_like(real[:, :1])
        # the critic's step, on real points and detached fakes
        loss_d = F.binary_cross_entropy_with_logits(self.critic(real), ones)
        loss_d = loss_d + F.binary_cross_entropy_with_logits(self.critic(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        # the generator's step, through the updated critic
        loss_g = F.binary_cross_entropy_with_logits(self.critic(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.lr_schedulers().step()
        self.log_dict({"train_loss_d": loss_d, "train_loss_g": loss_g}, on_epoch=True)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}  # checked for divergence

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        (noise,) = batch
        gap = (self.generator(noise).norm(dim=1) - 1).abs().mean()  # distance from the circle
        self.log("val_gap", gap)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[object]]:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.learning_rate, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=self.learning_rate, betas=(0.5, 0.999))
        return [opt_g, opt_d], [torch.optim.lr_scheduler.StepLR(opt_g, step_size=20, gamma=0.8)]


def train(run: Run) -> dict[str, float]:
    args = run.args
    seed_everything(args.seed)
    module = Gan(hidden_size=args.hidden_size, learning_rate=args.learning_rate)
    data = RingData(batch_size=args.batch_size, seed=args.seed, num_workers=args.num_workers)
    return fit(
        run,
        module,
        data,
        main_metric="val_gap",
        mode="min",
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=args.log_every_n_steps,
    )
