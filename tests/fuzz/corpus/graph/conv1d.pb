

sÿÿÿÿÿÿÿÿÿ
X
cconv1ds"
dilation"
in_channels"
kernel_size"
out_channels(
bnbatchnorm1dc"
num_features
flflattenbn6
fcdensefl"
in_features"
out_features

out0fc