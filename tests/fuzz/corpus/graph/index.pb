

xÿÿÿÿÿÿÿÿÿ

i

gÿÿÿÿÿÿÿÿÿ
	
w$
isindex_selectxi"

axis
gagatherxg"

axis
lilinearxw

out0is

out1ga

out2li