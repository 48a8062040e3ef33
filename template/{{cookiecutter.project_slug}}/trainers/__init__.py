"""One trainer per task, built on the shared base in base_trainer.py."""
