"""What lmms-eval's LMMS_EVAL_PLUGINS=zoo.lmms reads: model name -> class in zoo.lmms.models.<name>.

Kept free of imports, because lmms-eval imports this module whenever it starts, whatever model it runs.
"""

AVAILABLE_MODELS = {"stzoo": "STZoo"}
