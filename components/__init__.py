"""STZoo's building blocks, one kind a subpackage; see components.registry."""
