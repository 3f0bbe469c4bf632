B
reshape_15J·¶¶>¤£#?