"""CryoFlex Scipion protocols (thin: validate, convert, run the engine, register outputs)."""
from .base import CryoFlexProtocol  # noqa: F401
from .protocol_cryotrans import ProtCryoFlexCryoTrans  # noqa: F401
from .protocol_deephemnma import ProtCryoFlexDeepHEMNMAPredict, ProtCryoFlexDeepHEMNMATrain  # noqa: F401
from .protocol_defmap import ProtCryoFlexDefmapPredict, ProtCryoFlexDefmapTrain  # noqa: F401
from .protocol_elastic_align import ProtCryoFlexElasticAlign  # noqa: F401
from .protocol_landscape import ProtCryoFlexLandscape  # noqa: F401
from .protocol_model_map import ProtCryoFlexModelToMap  # noqa: F401
from .protocol_nma import ProtCryoFlexNMA, ProtCryoFlexVolumeToPseudoatoms  # noqa: F401
from .protocol_reconstruct import ProtCryoFlexReconstruct  # noqa: F401
from .protocol_simulate import ProtCryoFlexSimulateParticles  # noqa: F401
