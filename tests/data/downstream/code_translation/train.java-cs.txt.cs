public virtual int Add(int a, int b) { return a + b; }
public virtual void Clear() {list.Clear();}
