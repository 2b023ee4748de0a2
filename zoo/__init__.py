"""STZoo above the components, as floors; each imports only the floors below it:

    cli, launch,    the stzoo command; Ray Train launcher, loopback servers, the demo;
    lmms            the lmms-eval model adapter and task
    runs            MLflow tracking, run_recipe (train every stage, log, evaluate), sweeps, comparisons
    training        the training loop, progressive stages, DDP/DeepSpeed strategies
    evaluation      benchmarks, metrics, where answers look
    model           VideoLLM: recipe -> model, forward, losses, generation, checkpoints, cost
    data            readers, samplers, transforms, prompts, batches, datasets, the synthetic suite
    config          recipes and experiment files
    (components)    the registry and every building block, below all of zoo
    runtime         process-level policy beside components (intra-op threads); imports no project module
"""
