"""STZoo inside lmms-eval: the ``stzoo`` model (models/stzoo.py) and the ``stzoo_suite_mc`` task (tasks/).

lmms-eval finds the model through its plugin variable, ``LMMS_EVAL_PLUGINS=zoo.lmms`` (it imports
zoo.lmms.models and reads AVAILABLE_MODELS), and the task through ``--include_path zoo/lmms/tasks``:

    LMMS_EVAL_PLUGINS=zoo.lmms python -m lmms_eval --model stzoo --model_args pretrained=runs/NAME \\
        --tasks stzoo_suite_mc --include_path zoo/lmms/tasks --output_path lmms_out --log_samples
"""
