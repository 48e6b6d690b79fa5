"""Models by name (`create_model("lenet5")`) and the original project's building blocks."""
from tenfold.models.blocks import conv2d_maxpool, dropout, flatten, fully_conn, output
from tenfold.models.registry import create_model, list_models, load_user_model, pretrained_cfg, register_model
from tenfold.models import lenet as _lenet  # noqa: F401  (registers the seed's net)
from tenfold.models import airbench as _airbench  # noqa: F401  (registers the fast nets)
from tenfold.models import pretrained as _pretrained  # noqa: F401  (registers the ImageNet-pretrained nets)

__all__ = ["conv2d_maxpool", "flatten", "fully_conn", "dropout", "output",
           "create_model", "list_models", "pretrained_cfg", "register_model", "load_user_model"]
