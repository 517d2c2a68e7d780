

sÿÿÿÿÿÿÿÿÿ
X
cconv1ds"
in_channels"
dilation"
out_channels"
kernel_size(
bnbatchnorm1dc"
num_features
flflattenbn6
fcdensefl"
out_features"
in_features

out0fc