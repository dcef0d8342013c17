from deepvis.cli import run

run()
