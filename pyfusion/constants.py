"""The paper's constants, each in one place with its source.

Liu, Chen, Peng, Wang, "Multi-focus image fusion with a deep convolutional neural network",
Information Fusion 36 (2017) 191-207 (cited as [Liu2017] below).
"""

PATCH = 16            # input patch size of the siamese net, [Liu2017] Sec. 3.2.1
STRIDE = 2            # score-map stride of the deploy net (one 2x2 max pool), [Liu2017] Sec. 3.3.1
FC1_KERNEL = PATCH // STRIDE  # 8: fc1 seen as a convolution over the 8x8 pooled map
THRESHOLD = 0.5       # focus map -> binary map, [Liu2017] Sec. 3.3.2 (Eq. 3)
REGION_RATIO = 0.01   # small-region removal area threshold t = ratio * H * W, [Liu2017] Sec. 3.3.2
# ... of the one-pass N-frame label map (not in the paper: its 0.01 removes thin true layers of a stack), chosen on
# the synthetic tuning stacks (photos 50-59, seed 1; docs/stacks.md), not on the benchmark stacks
REGION_RATIO_STACK = 0.003
# ... of the fast path's label map at its working size (a frame over 520x520 scored reduced): 0.003 there removed the
# thin tilted pin of the pcb stack; 0.001 kept it and was as good on the tuning stacks at 2 and 4 times their size
REGION_RATIO_WORK = 0.001
GF_RADIUS = 8         # guided filter radius r, [Liu2017] Sec. 3.3.3
GF_EPS = 0.1          # guided filter regularisation eps (images in [0, 1]), [Liu2017] Sec. 3.3.3
BLUR_SIGMA = 2.0      # Gaussian blur sigma for training data, [Liu2017] Sec. 3.2.2
BLUR_SIZE = 7         # Gaussian window 7x7, [Liu2017] Sec. 3.2.2
BLUR_LEVELS = 5       # five cascaded blur versions, [Liu2017] Sec. 3.2.2
VAR_THRESHOLD = 25.0  # clear-patch variance threshold in 0-255 units (authors' patch sampling)
RGB2GRAY = (0.2989, 0.5870, 0.1140)  # MATLAB rgb2gray weights, used by the authors' released code
BAND_SCALE = {"low": 0.5, "high": 2.0}  # Haar band scales of the wavelet nets' inputs (fusionlab.data): LL x 1/2 is
                                        # the 2x2 block mean; details x 2 (this project's choice, docs/wavelet.md)
#: Working size (pixels) of the fast stack path and of the alignment by default: larger frames are scored and
#: registered at a reduced size (the survey's 520x520 pairs, the size the paper's net was shown to decide at).
WORK_PIXELS = 520 * 520
