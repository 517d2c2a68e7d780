

imgÿÿÿÿÿÿÿÿÿZ
c1conv2dimg"
in_channels"
kernel_size"
out_channels"
padding)
bnbatchnorm2dc1"
num_features+
act
activationbn"

activationrelu'
mp	maxpool2dact"
kernel_size4
ap	avgpool2dmp"
kernel_size"
stride9
gn	groupnormap"
num_channels"

num_groupsb
ctconv_transpose2dgn"
in_channels"
kernel_size"
out_channels"
stride0
aapadaptive_avgpool2dct"
output_size
gapglobal_avgpool2dct
flflattenaap6
fcdensefl"
in_features"
out_features

out0fc
out1gap