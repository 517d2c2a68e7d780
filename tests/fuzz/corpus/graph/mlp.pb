

xÿÿÿÿÿÿÿÿÿL
fc1densex"

activationrelu"
in_features"
out_features$
dropdropoutfc1"
p	š™™™™™¹?9
fc2densedrop"
in_features"
out_features
out0fc2