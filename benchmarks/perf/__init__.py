"""MAGE vs transformers' LLaVA-1.5 performance benchmark, one module per job. Run it with

    python -m benchmarks.perf --shapes tiny|small|7b|13b --device cpu|cuda [--quick] [--output FILE]

(`cli.py` describes the method and the options). Modules, lower ones first (each imports only those above it):

- `settings`: `RunSettings`, the compared models (`model_specs`), torch loaded on first use
- `models`: random-weight LLaVA / MAGE (`build_model`), training stages, synthetic batches (`make_batch`)
- `timing`: the training loss and step (`loss_of`, `Trainee`), interleaved repeats, the CPU allocator setting
- `speed`: training steps, the projector's share of a step, prefill and decode
- `machine`: GEMM rate and memory bandwidth of this machine (inputs of the analytical time model)
- `pipeline`: the data pipeline's samples/s
- `memory`: peak memory of training and LoRA/QLoRA steps in worker subprocesses
- `comparison`: measured MAGE/LLaVA ratios next to the analytical model's predictions
- `environment`: machine, versions and git state stored with each result
- `report`: the Markdown tables and the targets
- `runner`: one whole run (`run_benchmark`) and the re-derivation of a results JSON (`rederive`)
- `cli`: the command line; `__main__` runs it
"""
