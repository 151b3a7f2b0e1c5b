"""LightningDataModules for classification and the batch samplers methods use.

Importing the package registers the ``image_folder_classes`` resolver that conf/data/image_folder.yaml uses
(``num_classes: ${image_folder_classes:${data.root}}``: the class folders of ``<root>/train``)."""
from omegaconf import OmegaConf


def _image_folder_classes(root) -> int:
    from datamodules.image_folder import class_count
    return class_count(root)


OmegaConf.register_new_resolver("image_folder_classes", _image_folder_classes, replace=True)
