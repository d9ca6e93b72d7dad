"""Population GLMs: history bases, the Concrete prior, the GLM emission component, the switching HMM-GLM."""

from pssm.models.glm.bases import *  # noqa: F403
from pssm.models.glm.concrete import *  # noqa: F403
from pssm.models.glm.emission import *  # noqa: F403
from pssm.models.glm.hmm_glm import *  # noqa: F403
