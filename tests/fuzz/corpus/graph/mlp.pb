

xÿÿÿÿÿÿÿÿÿL
fc1densex"

activationrelu"
out_features"
in_features$
dropdropoutfc1"
p	š™™™™™¹?9
fc2densedrop"
out_features"
in_features
out0fc2